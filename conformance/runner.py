"""Run stages of cases on QEMU binaries and write their results: what `run` and `qualify` share.

For each binary: probe it (its capabilities decide the argv), decide the
accelerator once per host, build the test guest for its arch once, then run
the static stages (parse, argv), the boot stage of every selected case and
the migrate stage of every bootable case on every pair of builds of one arch
(each build with itself, and across builds both ways). Live work runs in
parallel (``jobs``, default: the number of cores); each VM has its own folder
under OUTPUT/live/, and results are appended to OUTPUT/results.jsonl as they finish, with a progress line per result.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.cases import Case, Catalogue
from conformance.errors import ConformanceError
from conformance.live.accel import AccelDecision, decide_accel
from conformance.results.records import QemuBuild, ResultWriter, StageResult
from conformance.results.verdicts import failures, is_failure
from conformance.shard import WHOLE, Shard, WorkItem

if TYPE_CHECKING:
    from conformance.caps.model import Capabilities
    from conformance.live.boot import Target
    from conformance.live.guest import Guest

Say = Callable[[str], None]


def make_target(binary: Path, say: Say, *, caps: Capabilities | None = None,
                accel: AccelDecision | None = None) -> Target:
    """Probe a binary (unless its capabilities are given) and prepare what its boots need.

    Raises ConformanceError when it cannot be probed.
    """
    from conformance.caps.probe import probe_binary
    from conformance.live.boot import Target
    from conformance.live.guest import build_guest

    caps = caps or probe_binary(binary)
    guest, problem = None, ""
    try:
        guest = build_guest(caps.arch, log=lambda m: say(f"  guest: {m}"))
    except ConformanceError as exc:
        problem = exc.message
        say(f"  no test guest for {caps.arch}: {exc}")
    if accel is None:
        accel = host_accel(binary, guest)
    return Target(binary, caps, accel, guest, problem)


_ACCEL_LOCK = threading.Lock()


def host_accel(binary: Path, guest: Guest | None) -> AccelDecision:
    """decide_accel with a real KVM boot probe of this binary and guest (run once per host boot)."""
    from conformance.live.accel import kvm_boot_probe

    with _ACCEL_LOCK:
        return decide_accel(lambda: kvm_boot_probe(binary, guest) if guest is not None else (False, "no guest"))


def run_static(cases: list[Case], target: Target, writer: ResultWriter, catalogue: Catalogue,
               say: Say, shard: Shard = WHOLE) -> Counter[str]:
    """parse and argv stages on the target's probed capabilities (see run_static_caps)."""
    return run_static_caps(cases, target.caps, target.build, writer, catalogue, say, shard)


def run_static_caps(cases: list[Case], caps: Capabilities, build: QemuBuild, writer: ResultWriter,
                    catalogue: Catalogue, say: Say, shard: Shard = WHOLE) -> Counter[str]:
    """parse and argv stages on one set of capabilities (probed or a stored fixture); each argv is
    kept as OUTPUT/argv/ARCH-VERSION/CASE.args, and known bugs of this version the argv meets are
    recorded with its result."""
    from conformance.argv.command import format_args
    from conformance.static import StaticRunner, to_result

    runner = StaticRunner(catalogue)
    counts: Counter[str] = Counter()
    argv_dir = writer.path.parent / "argv" / f"{caps.arch}-{caps.version}"
    for case in cases:
        if caps.arch not in case.arches:
            continue
        for outcome in runner.run(case, caps):
            if not shard.owns(WorkItem(case.name, outcome.stage, caps.label)):
                continue  # another shard's item
            counts[outcome.verdict] += 1
            result = to_result(outcome, caps)
            result.qemu = build
            if outcome.argv:
                argv_dir.mkdir(parents=True, exist_ok=True)
                args_file = argv_dir / f"{case.name}.args"
                args_file.write_text(format_args(outcome.argv))
                result.artifacts["argv"] = str(args_file.relative_to(writer.path.parent))
            writer.write(result)
            if is_failure(outcome.verdict):
                say(f"    {outcome.stage} {case.name}: {outcome.verdict.upper()} {outcome.reason}")
    return counts


def fixture_build(caps: Capabilities) -> QemuBuild:
    """The build a stored fixture stands for: no binary, the fixture named instead."""
    from conformance.caps.fixture import fixture_name

    return QemuBuild(f"fixture {fixture_name(caps)}", str(caps.version), caps.package, caps.arch)


def resolve_fixtures(specs: list[str]) -> list[Capabilities]:
    """--caps values (a fixture file, a libvirt caps XML, VERSION:ARCH, or ``all`` for every stored
    fixture) -> their capabilities, each once."""
    from conformance.caps.store import fixture_files, load, resolve

    found: dict[tuple[str, str, str], Capabilities] = {}
    for spec in specs:
        for caps in [load(p) for p in fixture_files()] if spec == "all" else [resolve(spec)]:
            found.setdefault((str(caps.version), caps.arch, caps.package), caps)
    return list(found.values())


def run_boots(cases: list[Case], targets: list[Target], writer: ResultWriter, catalogue: Catalogue, output: Path,
              say: Say, jobs: int | None = None, shard: Shard = WHOLE) -> Counter[str]:
    """The boot stage of every case on every target (of this shard), ``jobs`` at a time."""
    from conformance.live.boot import run_boot

    work = [(case, target, target) for target in targets for case in cases
            if target.caps.arch in case.arches and "boot" in case.stages
            and shard.owns(WorkItem(case.name, "boot", target.caps.label))]
    return _run_live("boot", work, lambda c, t, _: run_boot(c, t, catalogue, output).result, writer, say,
                     jobs or os.cpu_count() or 1)


def migration_pairs(targets: list[Target]) -> list[tuple[Target, Target]]:
    """Every build with itself, and every ordered pair of two builds of one arch (both directions)."""
    return [(a, b) for a in targets for b in targets if a.caps.arch == b.caps.arch]


def run_migrations(cases: list[Case], targets: list[Target], writer: ResultWriter, catalogue: Catalogue,
                   output: Path, say: Say, jobs: int | None = None, shard: Shard = WHOLE) -> Counter[str]:
    """The migrate stage of every bootable case on every pair, ``jobs`` at a time (default: the cores).
    A migration's guests idle most of the time, so more jobs are faster (on 2 cores, 24 migrations took
    89-102 s with 2 jobs, 58-68 s with 3-4), but the default stays at the cores: with 4 jobs one CI run
    of 44 saw a destination guest write nothing for 20 s after RESUME (under investigation)."""
    from conformance.live.migrate import run_migrate

    work = [(case, a, b) for a, b in migration_pairs(targets) for case in cases
            if a.caps.arch in case.arches and "boot" in case.stages
            and shard.owns(WorkItem(case.name, "migrate", a.caps.label, b.caps.label))]
    return _run_live("migrate", work, lambda c, a, b: run_migrate(c, a, b, catalogue, output), writer, say,
                     jobs or os.cpu_count() or 1)


def _run_live(stage: str, work: list[tuple[Case, Target, Target]],
              run: Callable[[Case, Target, Target], StageResult], writer: ResultWriter, say: Say,
              jobs: int) -> Counter[str]:
    """Run live work items ``jobs`` at a time, writing each result and a progress line as it finishes."""
    from conformance.progress import RunProgress  # rich: not for a process that runs one avocado test

    counts: Counter[str] = Counter()
    if not work:
        return counts
    jobs = max(1, jobs)
    started = time.monotonic()
    done = 0
    with RunProgress(stage, len(work), say) as progress, \
            ThreadPoolExecutor(max_workers=jobs, thread_name_prefix=stage) as pool:
        futures = {pool.submit(run, *item): item for item in work}
        for future in as_completed(futures):
            case, target, peer = futures[future]
            on = f"QEMU {target.caps.version} {target.caps.arch}"
            if stage == "migrate":
                on = f"QEMU {target.caps.version} -> {peer.caps.version} {target.caps.arch}"
            try:
                result = future.result()
            except Exception as exc:
                result = StageResult(case=case.name, stage=stage, verdict="error", arch=target.caps.arch,
                                     qemu=target.build, peer=peer.build if stage == "migrate" else None,
                                     reason=f"suite error: {type(exc).__name__}: {exc}")
            writer.write(result)
            counts[result.verdict] += 1
            done += 1
            why = "" if result.verdict == "pass" else f" {result.reason}"
            progress.done(result.verdict, f"  [{done}/{len(work)}] {stage} {case.name} on {on}: "
                                          f"{result.verdict.upper()} ({result.duration_s:.1f} s){why}")
    say(f"  {stage}: {len(work)} runs in {time.monotonic() - started:.1f} s with {jobs} jobs "
        f"({', '.join(f'{v} {n}' for v, n in sorted(counts.items()))})")
    return counts


def run_stages(stages: list[str], binaries: list[Path], case_globs: list[str], output: Path, say: Say, *,
               jobs: int | None = None, catalogue: Catalogue | None = None, fixtures: list[str] | None = None,
               shard: Shard = WHOLE) -> int:
    """`qemu-conformance run`: 0 when nothing failed, 1 otherwise. ``fixtures`` (--caps) run the static
    stages on stored capabilities, with no binary. ``shard``: only the work items of that shard."""
    from conformance.cases import load_catalogue

    catalogue = catalogue or load_catalogue()
    cases = catalogue.select(case_globs)
    output.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(output)
    targets = []
    bad = 0
    for caps in resolve_fixtures(fixtures or []):
        build = fixture_build(caps)
        say(f"{build.path}: QEMU {caps.version} {caps.arch} ({caps.provenance.source})")
        counts = run_static_caps(cases, caps, build, writer, catalogue, say, shard)
        bad += failures(counts)
        say(f"  static: {', '.join(f'{v} {n}' for v, n in sorted(counts.items()))}")
    for binary in binaries:
        say(f"{binary}:")
        try:
            target = make_target(binary, say)
        except ConformanceError as exc:
            say(f"  probe: ERROR {exc}")
            writer.write(StageResult(case="probe", stage="probe", verdict="error", reason=exc.message))
            bad += 1
            continue
        say(f"  QEMU {target.caps.version} {target.caps.arch}, accel {target.accel.accel} ({target.accel.reason})")
        targets.append(target)
        if {"parse", "argv"} & set(stages):
            counts = run_static(cases, target, writer, catalogue, say, shard)
            bad += failures(counts)
            say(f"  static: {', '.join(f'{v} {n}' for v, n in sorted(counts.items()))}")
    if "boot" in stages and targets:
        counts = run_boots(cases, targets, writer, catalogue, output, say, jobs, shard)
        bad += failures(counts)
    if "migrate" in stages and targets:
        counts = run_migrations(cases, targets, writer, catalogue, output, say, jobs, shard)
        bad += failures(counts)
    from conformance.report.html import write_report

    say(f"results: {writer.path}")
    say(f"report: {write_report([writer.path], output, title='QEMU conformance run')} (and junit.xml)")
    return 1 if bad else 0
