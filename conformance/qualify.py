"""Release qualification of QEMU builds: the main job.

For each binary: probe it, store the fixture in the output folder, and diff
it against the stored fixture of the same version and arch (nothing may be
lost) and against the newest stored older version (what changed since).
Results go to OUTPUT/results.jsonl; a summary is printed as it goes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from conformance.caps.diff import diff_caps
from conformance.caps.fixture import fixture_name, write_fixture
from conformance.caps.model import Capabilities
from conformance.caps.probe import probe_binary
from conformance.caps.store import fixture_files, load
from conformance.errors import ConformanceError
from conformance.machines import DEFAULT as MACHINES_DEFAULT
from conformance.machines import MachineChoice
from conformance.qemu.host import package_version
from conformance.results.records import QemuBuild, ResultWriter, StageResult
from conformance.results.verdicts import failures
from conformance.shard import WHOLE, Shard


def _stored_for(caps: Capabilities) -> tuple[Path | None, Path | None]:
    """(same version fixture, newest older-version fixture) of this arch in capsdata/."""
    same = older = None
    older_caps: Capabilities | None = None
    for path in fixture_files():
        stored = load(path)
        if stored.arch != caps.arch:
            continue
        if stored.version == caps.version:
            same = path
        elif stored.version < caps.version and (older_caps is None or stored.version > older_caps.version):
            older, older_caps = path, stored
    return same, older


def qualify_caps(binary: Path, output: Path, writer: ResultWriter,
                 say: Callable[[str], None]) -> tuple[bool, Capabilities | None]:
    """Probe one binary and check it against the stored fixtures; (nothing regressed, its capabilities)."""
    started = time.monotonic()
    try:
        caps = probe_binary(binary)
    except ConformanceError as exc:
        writer.write(StageResult(case="probe", stage="probe", verdict="error", reason=exc.message,
                                 qemu=QemuBuild(str(binary)), duration_s=time.monotonic() - started))
        say(f"  probe: ERROR {exc}")
        return False, None
    build = QemuBuild(str(binary), str(caps.version), caps.package, caps.arch,
                      package_version(str(binary), caps.package))  # dpkg's: known bugs' fixed_in_packages
    fixture = write_fixture(caps, output / "caps" / fixture_name(caps))
    writer.write(StageResult(
        case="probe", stage="probe", verdict="pass", arch=caps.arch, qemu=build, accel=caps.provenance.accel or "",
        duration_s=time.monotonic() - started, artifacts={"fixture": str(fixture.relative_to(output))},
        details={"flags": len(caps.flags), "machines": len(caps.machines), "types": len(caps.qom_types)}))
    failover = "yes" if caps.has("virtio-net.failover") else "NO"
    say(f"  QEMU {caps.version} {caps.arch} ({caps.package or 'no package string'}): {len(caps.machines)} machine"
        f" types, {len(caps.qom_types)} types, {len(caps.flags)} flags, virtio-net failover: {failover}")
    from conformance.caps.diff import origin

    same, older = _stored_for(caps)
    ok = True
    for label, stored_path, must_keep in (("stored", same, True), ("previous", older, False)):
        if stored_path is None:
            if must_keep:
                say(f"  {label}: no stored fixture for {caps.version} {caps.arch} "
                    f"(add it: qemu-conformance probe {binary} -o capsdata/{fixture_name(caps)})")
            continue
        stored = load(stored_path)
        result = diff_caps(stored, caps, f"{stored_path.name} ({origin(stored)})", f"probed {binary}")
        # only a loss a user would miss counts; against the stored fixture of this version it is a regression
        regressed = must_keep and result.regressed
        ok &= not regressed
        verdict = "fail" if regressed else "pass"
        reason = result.summary()
        full = output / "caps" / f"diff-{caps.label}-vs-{label}-{stored.version}.txt"
        full.write_text(result.full_text(limit=1_000_000) + "\n")
        writer.write(StageResult(
            case=f"caps-vs-{label}", stage="caps", verdict=verdict, reason=reason, arch=caps.arch, qemu=build,
            artifacts={"diff": str(full.relative_to(output))},
            details={"diff": result.full_text(limit=200), "not_compared": result.not_compared,
                     "lost": result.loud_losses}))
        say(f"  against {label} {stored_path.name}: {verdict.upper()} ({reason})")
        if result.not_compared:
            say(f"    not compared (one of the two fixtures does not record them): {result.not_compared_line()}")
        if result.regressed:
            say(f"    {'LOST' if regressed else 'WARNING: lost'}, a user of {stored.version} would miss: "
                f"{result.loud_line()}")
    return ok, caps


def qualify(binaries: list[Path], output: Path, say: Callable[[str], None] | None = None, *,
            boot: bool = True, jobs: int | None = None, shard: Shard = WHOLE,
            machines: MachineChoice = MACHINES_DEFAULT) -> int:
    """Run the qualification; exit status 0 when every build passed. ``shard``: only that shard's work items;
    every shard probes and checks each build's capabilities (the same records, merged as one). ``machines``
    (--machines): the machine types each migration runs under (default: the newest both builds have)."""
    from conformance.cases import load_catalogue
    from conformance.plan import plan
    from conformance.report.html import write_report
    from conformance.runner import (
        fresh_output,
        live_machines,
        make_target,
        run_live,
        run_static,
        run_vmstate,
        say_plan,
        target_names,
    )
    from conformance.stages import CASE_STAGES, LIVE_STAGES, STATIC_STAGES

    say = say or (lambda text: print(text, flush=True))
    if not binaries:
        print("qemu-conformance: error: no QEMU binary found: install qemu-system-x86 / qemu-system-arm "
              "or pass --qemu PATH", file=sys.stderr)
        return 2
    fresh_output(output)  # an earlier run's results, report and coverage panel would not be these builds'
    results = output / "results.jsonl"
    writer = ResultWriter(output)
    catalogue = load_catalogue()
    cases = list(catalogue.cases.values())
    stages = CASE_STAGES if boot else STATIC_STAGES
    ok = True
    targets = []
    for i, binary in enumerate(binaries, 1):
        say(f"[{i}/{len(binaries)}] {binary}")
        caps_ok, caps = qualify_caps(binary, output, writer, say)
        ok &= caps_ok
        if caps is None:
            continue
        target = make_target(binary, say, caps=caps)
        targets.append(target)
        counts = run_static(cases, target, writer, catalogue, say, shard, stages)
        ok &= not failures(counts)
        say(f"  static ({', '.join(s for s in STATIC_STAGES if s != 'vmstate')}): "  # vmstate: below, per pair
            f"{', '.join(f'{v} {n}' for v, n in sorted(counts.items()))}")
        say(f"  live: accel {target.accel.accel} ({target.accel.reason})")
    # the static migration prediction (conformance/vmstate.py): a build with itself asks nothing (its own
    # dump, one cached -dump-vmstate); two builds of one arch are compared both ways, as `run` does
    from conformance.prediction import HeldResults

    held = HeldResults(writer)  # a hazard the live migration passed is a warning (conformance/prediction.py settle)
    if "vmstate" in stages and targets:
        say("vmstate (predicted migration hazards, each build with itself and across builds of one arch):")
        run_vmstate(cases, targets, held, catalogue, say, shard, machines)
    live = shard.mine(plan(cases, targets, [s for s in stages if s in LIVE_STAGES], target_names,
                           machines=live_machines(machines)))
    say_plan(live, machines, say)
    if live:
        say(f"live stages ({', '.join(LIVE_STAGES)}): every case that lists them; migrate each build with itself, "
            "and across builds of one arch both ways:")
        ok &= not failures(run_live(live, writer, catalogue, output, say, jobs))
    ok &= not failures(held.flush(say))
    if boot:  # the report's device-coverage panel (conformance/coverage.py; cached per binary)
        from conformance.coverage import headline, measure, write_coverage

        try:
            measured = measure(binaries, lambda text: say(f"  {text}"))
            say(f"device coverage: {headline(measured)} ({write_coverage(measured, output)})")
        except ConformanceError as exc:
            say(f"device coverage: not measured: {exc}")
    say(f"results: {results}")
    say(f"report: {write_report([results], output, title='QEMU qualification')}")
    say("QUALIFIED" if ok else "NOT QUALIFIED: see the failures above")
    return 0 if ok else 1
