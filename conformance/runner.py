"""Run stages of cases on QEMU binaries and write their results: what `run` and `qualify` share.

For each binary: probe it (its capabilities decide the argv), decide the
accelerator once per host, build the test guest for its arch once, then run
the work items the planner (conformance/plan.py) makes of the requested stages:
the static ones per build, then the live ones (the boots, and the migrations
on every pair of builds of one arch, each build with itself and across builds
both ways, each as soon as the boot it starts from is done). Live work runs in
parallel (``jobs``; by default the cores' worth of boots and LATENCY_JOBS more
items for migrations; one executor: ``_run_live``); each VM has its own folder
under OUTPUT/live/, and results are appended to OUTPUT/results.jsonl as they
finish, with a progress line per result.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance import interrupt
from conformance.cases import Case, Catalogue
from conformance.data import note_layer
from conformance.errors import ConformanceError
from conformance.live.accel import AccelDecision, decide_accel
from conformance.machines import DEFAULT as MACHINES_DEFAULT
from conformance.machines import FROM_GIVEN, MachineChoice, planner_machines
from conformance.plan import Planned, longest_first, plan
from conformance.results.records import QemuBuild, ResultWriter, StageResult
from conformance.results.verdicts import failures, is_failure
from conformance.shard import WHOLE, Shard
from conformance.stages import LIVE_STAGES, STATIC_STAGES, in_order, stage

if TYPE_CHECKING:
    from conformance.caps.model import Capabilities
    from conformance.live.boot import Target
    from conformance.live.checked import CheckedStates
    from conformance.live.guest import Guest
    from conformance.static import StaticRunner

Say = Callable[[str], None]
#: a live stage: (case, build, peer, machine type) -> result; the machine type is the planned item's
#: (--machines all/REGEX), '' for the stage's own choice
LiveRun = Callable[[Case, "Target", "Target | None", str], StageResult]


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


def target_names(target: Target) -> tuple[str, str]:
    """A target as the planner names builds: (VERSION-ARCH, arch)."""
    return target.caps.label, target.caps.arch


def caps_names(caps: Capabilities) -> tuple[str, str]:
    return caps.label, caps.arch


def run_static(cases: list[Case], target: Target, writer: ResultWriter, catalogue: Catalogue,
               say: Say, shard: Shard = WHOLE, stages: Iterable[str] = STATIC_STAGES,
               runner: StaticRunner | None = None) -> Counter[str]:
    """The static stages on the target's probed capabilities (see run_static_caps)."""
    return run_static_caps(cases, target.caps, target.build, writer, catalogue, say, shard, stages, runner)


def run_static_caps(cases: list[Case], caps: Capabilities, build: QemuBuild, writer: ResultWriter,
                    catalogue: Catalogue, say: Say, shard: Shard = WHOLE,
                    stages: Iterable[str] = STATIC_STAGES, runner: StaticRunner | None = None) -> Counter[str]:
    """The requested static stages of ``cases`` on one set of capabilities (probed or a stored fixture),
    as planned (conformance/plan.py) and owned by ``shard``; see run_static_items."""
    static = [s for s in stages if stage(s).static and stage(s).scope == "case"]  # vmstate: run_vmstate
    items = shard.mine(plan(cases, [caps], static, caps_names))
    return Counter(r.verdict for r in run_static_items(items, caps, build, writer, catalogue, say, runner))


def static_runner(cases: list[Case], fixtures: Sequence[Capabilities], catalogue: Catalogue, shard: Shard,
                  stages: Iterable[str], jobs: int) -> StaticRunner:
    """One StaticRunner for all the builds of a run (rendering and parsing are done once per case and arch,
    not per build), with the planned static items of ``fixtures`` computed ahead in ``jobs`` processes."""
    from conformance.static import StaticRunner

    runner = StaticRunner(catalogue)
    static = [s for s in stages if stage(s).static and stage(s).scope == "case"]
    runner.prefetch([(p.case, caps) for caps in fixtures for p in shard.mine(plan(cases, [caps], static, caps_names))],
                    jobs)
    return runner


def run_static_items(items: Sequence[Planned[Any]], caps: Capabilities, build: QemuBuild, writer: ResultWriter,
                     catalogue: Catalogue, say: Say, runner: StaticRunner | None = None) -> list[StageResult]:
    """Run the planned static items of one build and record exactly those: a stage that was not planned
    is not recorded, even when a planned one did its work (argv renders and parses the domain, as parse
    does). Each argv is kept as OUTPUT/argv/ARCH-VERSION/CASE.args, and known bugs of this version the
    argv meets are recorded with its result."""
    from conformance.argv.command import format_args
    from conformance.static import StaticOutcome, StaticRunner, to_result

    runner = runner or StaticRunner(catalogue)
    by_case: dict[str, dict[str, Planned[Any]]] = {}
    for p in items:
        by_case.setdefault(p.case.name, {})[p.stage.name] = p
    results = []
    argv_dir = writer.path.parent / "argv" / f"{caps.arch}-{caps.version}"
    for wanted in by_case.values():
        case = next(iter(wanted.values())).case
        outcomes = {o.stage: o for o in runner.run(case, caps)}
        for name in in_order(wanted):
            outcome = outcomes.get(name) or StaticOutcome(
                case.name, caps.label, "skip", name,
                f"the parse stage expects the error {case.expect_error!r}: there is no {name} stage"
                if case.expect_error else f"no {name} outcome")
            result = to_result(outcome, caps)
            result.qemu = build
            if outcome.argv:
                argv_dir.mkdir(parents=True, exist_ok=True)
                args_file = argv_dir / f"{case.name}.args"
                args_file.write_text(format_args(outcome.argv))
                result.artifacts["argv"] = str(args_file.relative_to(writer.path.parent))
            note_layer(result.details, case.layer)  # a case of a user's data layer (--data) says so
            if case.domain is not None:  # a user's domain (--domain): the file, and what the stage changed in it
                from conformance.cases import case_variables
                from conformance.domain.user import domain_details

                machine = case.targets[0][1]
                emulator = case_variables(case, caps, machine, image_dir="", defaults=catalogue.defaults)["emulator"]
                result.details.update(domain_details(case, emulator=str(emulator), machine=machine))
            writer.write(result)
            results.append(result)
            if is_failure(outcome.verdict):
                say(f"    {outcome.stage} {case.name}: {outcome.verdict.upper()} {outcome.reason}")
    return results


def fixture_build(caps: Capabilities) -> QemuBuild:
    """The build a stored fixture stands for: no binary, the fixture named instead."""
    from conformance.caps.fixture import fixture_name
    from conformance.caps.store import fixture_files
    from conformance.data import BASE_NAMES, layer_of

    name = fixture_name(caps)
    layer = next((layer_of(p) for p in fixture_files() if p.name == name), "")
    where = f" (data layer {layer})" if layer and layer not in BASE_NAMES else ""  # a user's fixture (--data)
    return QemuBuild(f"fixture {name}{where}", str(caps.version), caps.package, caps.arch)


def resolve_fixtures(specs: list[str]) -> list[Capabilities]:
    """--caps values (a fixture file, a libvirt caps XML, VERSION:ARCH, or ``all`` for every stored
    fixture) -> their capabilities, each once."""
    from conformance.caps.store import fixture_files, load, resolve

    found: dict[tuple[str, str, str], Capabilities] = {}
    for spec in specs:
        for caps in [load(p) for p in fixture_files()] if spec == "all" else [resolve(spec)]:
            found.setdefault((str(caps.version), caps.arch, caps.package), caps)
    return list(found.values())


#: items a live run keeps going at once beyond the cores (when --jobs is not given): migrations only, since a
#: migration's guests idle most of the time (a checked migration: about 0.7 QEMU CPU s in 1.9 s of wall) while a
#: boot is CPU-bound (a host qualification's 73 boots: 188 QEMU CPU s in 112.6 s on 2 cores). Evidence: docs/live.md
#: "How many at a time".
LATENCY_JOBS = 2


@dataclass
class LiveStage:
    """One live stage's work for the executor: its items in the order to start them, the function that runs
    one, and how many of them may run at once."""

    name: str
    work: list[Planned[Target]]
    run: LiveRun
    limit: int


def live_jobs(jobs: int | None) -> tuple[int, int]:
    """(items at a time, boots at a time): ``jobs`` given, that many items and at most the cores' worth of
    boots; by default the cores plus LATENCY_JOBS items, the cores' worth of boots."""
    cores = os.cpu_count() or 1
    total = max(1, jobs) if jobs else cores + LATENCY_JOBS
    return total, min(total, cores)


def run_live(items: Sequence[Planned[Target]], writer: ResultWriter, catalogue: Catalogue, output: Path, say: Say,
             jobs: int | None = None) -> Counter[str]:
    """The planned live items, the stages overlapping: a migration starts as soon as the boot whose checked
    guest it starts from is done (the same case, build and machine type: conformance/live/checked.py), not
    after every boot. At most ``jobs`` items at a time, and no more items that boot a guest than the cores
    (boots, and migrations that boot their own source: ``cpu_bound``; ``live_jobs``: by default the cores plus
    LATENCY_JOBS items, the room above the cores for migrations, which idle most of the time). Boots start
    first when both can (they are the CPU-bound part); each stage runs its longest items first
    (conformance/plan.py: longest_first), by the seconds earlier runs took (the cache's durations.json), else
    by ``estimate``."""
    counts: Counter[str] = Counter()
    checked = checked_states(items, output)
    history = durations()
    total, boots = live_jobs(jobs)
    try:
        stages = []
        for name in LIVE_STAGES:
            work = [p for p in items if p.stage.name == name]
            if not work:
                continue
            if interrupt.STOP.is_set():  # a stage the interrupted run never reached
                for planned in work:
                    counts[_write_interrupted(planned, writer, "not started")] += 1
                continue
            work = longest_first(work, lambda p: history.get(p.item.id) or estimate(p))
            if name == "migrate":
                work = chained(work, lambda p: _source_key(p, output), total + 1)
            stages.append(LiveStage(name, work, live_stage_runner(name, catalogue, output, checked),
                                    boots if name == "boot" else total))
        timed: dict[str, float] = {}
        waits = boot_first(items, output)
        counts.update(_run_live(stages, writer, say, total, timed, after=waits,
                                heavy=(cpu_bound([p for s in stages for p in s.work], waits, output), boots)))
        for found in checked.take_findings():  # a checked state its own build cannot load: a result
            writer.write(found)
            counts[found.verdict] += 1
            say(f"  migrate {found.case} on QEMU {found.qemu.version if found.qemu else '?'} through its checked "
                f"state: {found.verdict.upper()} {found.reason}")
        save_durations(timed)
    finally:
        checked.close()
    return counts


def cpu_bound(work: Sequence[Planned[Target]], waits: dict[int, Planned[Target]], output: Path) -> set[int]:
    """Ids of the items that boot a guest, which at most the cores' worth run at once: every boot, and each
    migration that boots its own source: one whose source no planned boot keeps (``waits``) and that is the first
    of its source key in ``work`` (the key's later ones restore the state it saves, or resume its source). A skip
    (no source key) boots nothing."""
    heavy, keys = set(), set()
    for p in work:
        if p.stage.name == "boot":
            heavy.add(id(p))
        elif p.stage.name == "migrate" and id(p) not in waits:
            key = _source_key(p, output)
            if key is not None and key not in keys:
                heavy.add(id(p))
                keys.add(key)
    return heavy


def boot_first(items: Sequence[Planned[Target]], output: Path) -> dict[int, Planned[Target]]:
    """{id of a migration: the boot it waits for}: the planned boot that keeps (or finds down) the checked guest
    the migration starts from (conformance/live/migrate.py keep_checked, note_boot: the same source key). A
    migration started before that boot ended would boot its own source instead."""
    by_key = {}
    for p in items:
        if p.stage.name == "boot":
            key = _source_key(p, output)
            if key is not None:
                by_key[key] = p
    waits = {}
    for p in items:
        if p.stage.name == "migrate":
            key = _source_key(p, output)
            if key is not None and key in by_key:
                waits[id(p)] = by_key[key]
    return waits


#: s per live item before any run timed it: medians of a 6-build matrix (a517aec, 2 shared cores, TCG)
ESTIMATES = {("boot", "x86_64"): 6.7, ("boot", "aarch64"): 3.3, ("migrate", "x86_64"): 18.5,
             ("migrate", "aarch64"): 10.6}
DURATIONS_FILE = "durations.json"  # in the cache folder: {item id: seconds} of the latest runs


def estimate(planned: Planned[Any]) -> float:
    """How long an item nobody timed yet may take: its stage and arch's median, longer for the generic guest
    (a full distribution kernel: about 3 times) and for a device-rich case (bisect: about 1.6 times)."""
    arch = planned.build.caps.arch if hasattr(planned.build, "caps") else ""
    seconds = ESTIMATES.get((planned.stage.name, arch), 10.0)
    if planned.case.live.get("guest") == "generic":
        seconds *= 3
    return seconds * (1.6 if planned.case.bisect else 1.0)


def durations() -> dict[str, float]:
    """The seconds earlier runs took per item id (empty when none was recorded or the file is unreadable)."""
    import json

    from conformance.paths import cache_dir

    try:
        found = json.loads((cache_dir() / DURATIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in found.items() if isinstance(v, int | float)} if isinstance(found, dict) \
        else {}


def save_durations(timed: dict[str, float]) -> None:
    """Merge this run's item durations into the cache (a write that fails only loses the ordering hint)."""
    import json

    from conformance.paths import cache_dir

    if not timed:
        return
    path = cache_dir() / DURATIONS_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**durations(), **timed}, indent=0, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass


def chained(work: Sequence[Planned[Target]], key_of: Callable[[Planned[Target]], Any], width: int
            ) -> list[Planned[Target]]:
    """The migrations in an order for sources kept from one migration to the next of their key (case, source
    build, machine type: conformance/live/checked.py ``Resumable``): keys in the order of their first item,
    ``width`` keys at a time taking turns, so that a key's next item starts about ``width`` items after the
    one before (its source is then free) and at most ``width`` kept sources wait at once. Items with no key
    keep their place in the turns."""
    groups: dict[Any, list[Planned[Target]]] = {}
    for index, planned in enumerate(work):
        key = key_of(planned)
        groups.setdefault(key if key is not None else ("item", index), []).append(planned)
    queue = list(groups.values())
    window: list[list[Planned[Target]]] = []
    ordered: list[Planned[Target]] = []
    while queue or window:
        while queue and len(window) < width:
            window.append(queue.pop(0))
        for group in list(window):
            ordered.append(group.pop(0))
            if not group:
                window.remove(group)
    return ordered


def _source_key(planned: Planned[Target], output: Path) -> Any:
    from conformance.live.migrate import source_key

    return source_key(planned.case, planned.build, planned.peer or planned.build, planned.item.machine, output)


def checked_states(items: Sequence[Planned[Target]], output: Path) -> CheckedStates:
    """Boot once, migrate many (conformance/live/checked.py): the planned migrations counted by the checked
    source state each can start from."""
    from conformance.live.checked import CheckedStates
    from conformance.live.migrate import source_key

    keys = [source_key(p.case, p.build, p.peer or p.build, p.item.machine, output)
            for p in items if p.stage.name == "migrate"]
    return CheckedStates(Counter(k for k in keys if k is not None))


def _on(planned: Planned[Target]) -> str:
    """The build (or pair) an item runs on, for progress lines."""
    target, peer = planned.build, planned.peer
    if peer is not None:
        machine = f" @{planned.item.machine}" if planned.item.machine else ""
        return f"QEMU {target.caps.version} -> {peer.caps.version} {target.caps.arch}{machine}"
    return f"QEMU {target.caps.version} {target.caps.arch}"


def _error_result(planned: Planned[Target], verdict: str, reason: str) -> StageResult:
    target, peer = planned.build, planned.peer
    return StageResult(case=planned.case.name, stage=planned.stage.name, verdict=verdict, arch=target.caps.arch,
                       qemu=target.build, peer=peer.build if peer is not None else None, reason=reason,
                       details={"machine": planned.item.machine, "machine_from": FROM_GIVEN}
                       if planned.item.machine else {})


def _write_interrupted(planned: Planned[Target], writer: ResultWriter, what: str) -> str:
    """Record an item the interrupted run did not finish: ``what`` it was ('not started', or what it saw)."""
    writer.write(_error_result(planned, "interrupted", f"{interrupt.reason()}; {what}"))
    return "interrupted"


def live_stage_runner(name: str, catalogue: Catalogue, output: Path, checked: CheckedStates | None = None
                      ) -> LiveRun:
    """The function that runs one item of a live stage: (case, build, peer, machine type) -> its result. A
    failure of a device-rich case is bisected to the devices that make it fail (conformance/live/bisect.py).
    ``checked``: boot once, migrate many: a boot keeps its checked guest for the migrations from its build,
    which start from it (conformance/live/checked.py)."""
    from conformance.live.bisect import bisecting

    if name == "boot":
        from conformance.live.boot import run_boot
        from conformance.live.migrate import keep_checked, note_boot

        def boot(case: Case, target: Target, _peer: Any, _machine: str, out: Path) -> StageResult:
            run = run_boot(case, target, catalogue, out,
                           keep=keep_checked(checked, case, target, catalogue, out) if checked is not None else None)
            if checked is not None:  # a source that never came up is not booted again by its migrations
                note_boot(checked, case, target, out, run)
            return run.result

        return bisecting(boot, output)
    if name == "migrate":
        from conformance.live.migrate import run_migrate

        return bisecting(lambda case, source, destination, machine, out: run_migrate(
            case, source, destination or source, catalogue, out, machine=machine,
            checked=checked if out == output else None), output)
    raise ConformanceError(f"no runner for the live stage {name!r}",
                           hint="give it one in conformance/runner.py: live_stage_runner")


def _run_live(stages: Sequence[LiveStage], writer: ResultWriter, say: Say, jobs: int,
              timed: dict[str, float] | None = None, after: dict[int, Planned[Target]] | None = None,
              heavy: tuple[set[int], int] | None = None) -> Counter[str]:
    """The executor: run the stages' items ``jobs`` at a time, each stage at most its ``limit`` at a time, an
    item only once the item ``after`` names for it (by id) is done, and of the items ``heavy`` names (ids, and
    a limit: those that boot a guest) at most that many at a time. Free slots go to the first stage (in the
    order given) with an item that may start, and within a stage to its first such item. Each result and a
    progress line are written as it finishes, and a line per stage when its last item ends; ``timed`` gets the
    seconds of each item that ran to a verdict on QEMU."""
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    from conformance.progress import RunProgress  # rich: not for a process that runs one avocado test

    counts: Counter[str] = Counter()
    queues = {s.name: list(s.work) for s in stages if s.work}
    if not queues:
        return counts
    sizes = {s.name: len(s.work) for s in stages}
    limits = {s.name: max(1, s.limit) for s in stages}
    runs = {s.name: s.run for s in stages}
    after = after or {}
    heavy_ids, heavy_limit = heavy if heavy is not None else (set(), jobs)
    heavy_running = 0
    jobs = max(1, jobs)
    started = time.monotonic()
    running: Counter[str] = Counter()
    ended: set[int] = set()  # ids of the items done
    per_stage: dict[str, Counter[str]] = {name: Counter() for name in queues}
    cpu: Counter[str] = Counter()  # QEMU CPU s per stage, as the results record them
    futures: dict[Future[StageResult], tuple[str, Planned[Target]]] = {}

    def next_ready() -> tuple[str, Planned[Target]] | None:
        for name, queue in queues.items():
            if running[name] >= limits[name]:
                continue
            for index, planned in enumerate(queue):
                if id(planned) in heavy_ids and heavy_running >= heavy_limit:
                    continue
                before = after.get(id(planned))
                if before is None or id(before) in ended:
                    return name, queue.pop(index)
        return None

    def finish(name: str, planned: Planned[Target], result: StageResult) -> None:
        note_layer(result.details, planned.case.layer)
        if planned.case.domain is not None:  # a user's domain (--domain): what the live stage changed in it
            from conformance.domain.user import domain_details

            result.details.update(domain_details(
                planned.case, emulator=str(planned.build.binary), live=True, accel=planned.build.accel.accel,
                machine=str(result.details.get("machine") or planned.item.machine or "")))
        writer.write(result)
        if timed is not None and result.verdict not in ("skip", "interrupted", "error"):
            timed[planned.item.id] = round(result.duration_s, 2)
        ended.add(id(planned))
        counts[result.verdict] += 1
        per_stage[name][result.verdict] += 1
        cpu[name] += _qemu_cpu(result)
        done = sum(per_stage[name].values())
        why = "" if result.verdict == "pass" else f" {result.reason}"
        progress.done(result.verdict, f"  [{done}/{sizes[name]}] {name} {planned.case.name} on {_on(planned)}: "
                                      f"{result.verdict.upper()} ({result.duration_s:.1f} s){why}")
        if done == sizes[name]:
            say(f"  {name}: {sizes[name]} runs in {time.monotonic() - started:.1f} s ({cpu[name]:.1f} QEMU CPU s), "
                f"at most {min(limits[name], jobs)} at a time of {jobs} jobs "
                f"({', '.join(f'{v} {n}' for v, n in sorted(per_stage[name].items()))})")

    with RunProgress(", ".join(queues), sum(sizes.values()), say) as progress, \
            ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="live") as pool:
        while any(queues.values()) or futures:
            if interrupt.STOP.is_set():  # Ctrl-C/SIGTERM: nothing queued starts (the running ones end now)
                for name, queue in queues.items():
                    for planned in queue:
                        finish(name, planned, _error_result(planned, "interrupted",
                                                            f"{interrupt.reason()}; not started"))
                    queue.clear()
            while len(futures) < jobs and (picked := next_ready()) is not None:
                name, planned = picked
                running[name] += 1
                heavy_running += id(planned) in heavy_ids
                futures[pool.submit(runs[name], planned.case, planned.build, planned.peer,
                                    planned.item.machine)] = picked
            if not futures:  # nothing runs and nothing may start: an item waits for one that is not planned
                for name, queue in queues.items():
                    for planned in queue:
                        finish(name, planned, _error_result(planned, "error", "suite error: it waited for an "
                                                            "item that never ran"))
                    queue.clear()
                break
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                name, planned = futures.pop(future)
                running[name] -= 1
                heavy_running -= id(planned) in heavy_ids
                try:
                    result = future.result()
                except Exception as exc:
                    result = _error_result(planned, "error", f"suite error: {type(exc).__name__}: {exc}")
                if interrupt.STOP.is_set() and result.verdict not in ("pass", "skip"):
                    # its QEMUs were ended under it: what it saw is no verdict on QEMU
                    result.details["seen_before_the_stop"] = f"{result.verdict}: {result.reason}"
                    result.verdict, result.reason = "interrupted", f"{interrupt.reason()}; it saw: {result.reason}"
                finish(name, planned, result)
    return counts


def _qemu_cpu(result: StageResult) -> float:
    """The QEMU CPU s a live result records (a boot's, a migration's two sides)."""
    found = result.details.get("cpu_s")
    if isinstance(found, dict):
        return sum(float(v) for v in found.values() if isinstance(v, int | float))
    return float(found) if isinstance(found, int | float) else 0.0


def run_stages(stages: list[str], binaries: list[Path], case_globs: list[str], output: Path, say: Say, *,
               jobs: int | None = None, catalogue: Catalogue | None = None, fixtures: list[str] | None = None,
               shard: Shard = WHOLE, machines: MachineChoice = MACHINES_DEFAULT, domains: Sequence[Path] = ()) -> int:
    """`qemu-conformance run`: the planned items of ``stages`` (only those) on every binary, 0 when nothing
    failed, 1 otherwise. ``fixtures`` (--caps) run the static stages on stored capabilities, with no binary.
    ``domains`` (--domain): users' own domain files, planned as cases beside the catalogue's
    (conformance/domain/user.py); with domains and no ``case_globs``, only the domains run.
    ``shard``: only the work items of that shard; ``machines`` (--machines): the machine types each migration
    runs under (conformance/machines.py). Results go to a fresh OUTPUT/results.jsonl (a re-run into the same
    folder replaces the earlier run's files: see ``fresh_output``)."""
    from conformance.cases import load_catalogue

    catalogue = catalogue or load_catalogue()
    cases = catalogue.select(case_globs) if case_globs or not domains else []
    if domains:
        from conformance.domain.user import domain_cases

        cases += domain_cases(list(domains), tuple(stages), taken={c.name for c in cases})
    output.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(output)
    targets = []
    bad = 0
    stored = resolve_fixtures(fixtures or [])
    static = static_runner(cases, stored, catalogue, shard, stages, jobs or os.cpu_count() or 1)
    for caps in stored:
        build = fixture_build(caps)
        say(f"{build.path}: QEMU {caps.version} {caps.arch} ({caps.provenance.source})")
        counts = run_static_caps(cases, caps, build, writer, catalogue, say, shard, stages, static)
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
        if set(stages) & set(STATIC_STAGES):
            counts = run_static(cases, target, writer, catalogue, say, shard, stages, static)
            bad += failures(counts)
            say(f"  static: {', '.join(f'{v} {n}' for v, n in sorted(counts.items()))}")
    if domains:  # a domain of an arch no build has is a skip saying so, not silence (one shard writes it)
        from conformance.domain.user import without_builds
        from conformance.plan import WorkItem

        arches = {t.caps.arch for t in targets} | {c.arch for c in resolve_fixtures(fixtures or [])}
        for result in without_builds(cases, arches, stages):
            if shard.owns(WorkItem(result.case, result.stage, "")):
                writer.write(result)
                say(f"  {result.stage} {result.case}: SKIP {result.reason}")
    from conformance.prediction import HeldResults

    held = HeldResults(writer)  # a hazard the same run's live migration passed is a warning (prediction.settle)
    classes = None  # --machines classes|differences: one migration per class (conformance/machine_classes.py)
    if machines.classes:
        from conformance.machine_classes import ClassPlanner

        classes = ClassPlanner(targets, catalogue, machines.spec)
    if "vmstate" in stages:  # the prediction is cheap: every machine type, also under classes
        run_vmstate(cases, targets, held, catalogue, say, shard, MachineChoice.parse("all") if classes else machines)
    live = shard.mine(plan(cases, targets, [s for s in stages if stage(s).live], target_names,
                           machines=classes.machines if classes else live_machines(machines)))
    say_plan(live, machines, say)
    bad += failures(run_live(live, classes.writer(writer) if classes else writer, catalogue, output, say, jobs))
    bad += failures(held.flush(say))
    from conformance.report.html import write_report

    say(f"results: {writer.path}")
    say(f"report: {write_report([writer.path], output, title='QEMU conformance run')} (and junit.xml)")
    return 1 if bad else 0


def run_vmstate(cases: list[Case], targets: list[Target], writer: Any, catalogue: Catalogue, say: Say,
                shard: Shard = WHOLE, machines: MachineChoice = MACHINES_DEFAULT) -> Counter[str]:
    """The static prediction (conformance/vmstate.py) of every planned (case, ordered pair, machine type)."""
    from conformance.vmstate import run_items

    items = shard.mine(plan(cases, targets, ["vmstate"], target_names, machines=live_machines(machines)))
    started = time.monotonic()
    counts = Counter(r.verdict for r in run_items(items, writer, catalogue, say))
    say(f"  vmstate: {len(items)} predictions in {time.monotonic() - started:.1f} s "
        f"({', '.join(f'{v} {n}' for v, n in sorted(counts.items()))})")
    return counts


def live_machines(choice: MachineChoice) -> Callable[[Case, Target, Target], Sequence[str]] | None:
    """The planner's ``machines`` for targets (their probed capabilities). For ``newest``, one item per pair
    under the stage's own choice (''), but a user's domain (--domain) naming a versioned machine type runs
    under that type, as libvirt migrates it, not under the newest of its family."""
    chosen = planner_machines(choice, lambda target: target.caps)
    if chosen is not None:
        return chosen
    from conformance.domain.user import own_machine

    return lambda case, source, _destination: [own_machine(case, source.caps)]


def say_plan(items: Sequence[Planned[Any]], choice: MachineChoice, say: Say) -> None:
    """One line: the live items planned per stage, and under --machines all/REGEX how many machine types."""
    if not items:
        return
    per_stage = Counter(p.stage.name for p in items)
    line = ", ".join(f"{name} {per_stage[name]}" for name in in_order(per_stage))
    if not choice.newest:
        types = {p.item.machine for p in items if p.item.machine}
        line += f" (--machines {choice.spec}: {len(types)} machine types)"
    say(f"live plan: {line}")


# --- the output folder -------------------------------------------------------------------

#: What a run writes into its output folder: a re-run removes these, and nothing else.
RUN_FILES = ("results.jsonl", "report.html", "junit.xml", "shard.json", "coverage.json", "prediction.json")
RUN_FOLDERS = ("live", "argv", "caps")  # VM folders; argv files; qualify's probed fixtures and diffs


def fresh_output(output: Path) -> list[str]:
    """Make ``output`` ready for a new run: a folder that holds an earlier run (its results.jsonl or
    shard.json) loses that run's files (RUN_FILES, RUN_FOLDERS), so that its report, JUnit and
    shard.json describe the new run only; anything else in the folder is left alone. The names removed."""
    import shutil

    output.mkdir(parents=True, exist_ok=True)
    if not any((output / name).is_file() for name in ("results.jsonl", "shard.json")):
        return []  # not a run's folder (or an empty one): nothing here is ours
    removed = []
    for name in RUN_FILES:
        path = output / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(name)
    for name in RUN_FOLDERS:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(f"{name}/")
    return removed
