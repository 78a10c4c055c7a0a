"""Migration: the raw QMP floor beside the suite's migrate stage, on the host's x86_64 QEMU (TCG).

For a plain case (q35-minimal) and a failover case (teaming-q35), each run boots a checked source and a
waiting destination (the suite's own start_pair), then migrates:
- raw: migrate-incoming + migrate, then query-migrate every 20 ms until ``completed`` (the floor);
- suite: migrate_vms, timed twice: until the migration is judged complete (status seen and the
  destination running) and in full (with the destination's checks: heartbeat, re-plug, QMP).
The RAM check (conformance/live/ramcheck.py) is timed twice: inside the suite's runs (the way it took
there), and on each raw pair once it has migrated (the destination loaded and paused, the source
stopped), both ways: read from each QEMU's memory, and by pmemsave (what it did before).
Per pair, the source is made ready two ways, each timed with the CPU seconds of its QEMUs: booted and
checked (what every migration did before), and restored from a checked state saved once
(conformance/live/checked.py: what a run does for a failover guest); a pair's cost is that plus the checked
migration. A third way for the plain case: the source kept after the migration before it, resumed with cont
(what a run does for a key's second and later migrations of a guest that is not a failover one). A fourth, for
both cases: the boot stage's checked VM handed over, paused, to the key's one migration (what a one-build
qualification does for every case): the boot with its checks, then the suite's run_migrate, timed and priced
alone (``--handed-only`` prints only these lines).
A failover guest is saved running, on QEMU 9.0 or later only: on an older build its pairs boot (said so).
``--memory-mib`` sizes the guests (default: the catalogue's, 256 MiB); ``--qemu`` another x86_64 build
than the host's. The last line is the headline.

    python3 benchmarks/migrate.py [--runs 3] [--memory-mib 1024] [--qemu PATH] [--handed-only]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from conformance.argv.options import devices
from conformance.cases import load_catalogue
from conformance.live.boot import launch, prepare_vm
from conformance.live.checked import CheckedState, restore, resume
from conformance.live.checks import failover_pairs
from conformance.live.migrate import (
    MigrationTimeouts,
    _alias_to,
    _keepable,
    make_checked,
    migrate_vms,
    source_key,
    start_pair,
)
from conformance.live.ramcheck import compare_ram, ram_region_names
from conformance.live.vm import GuestVm
from conformance.runner import make_target


class Run(NamedTuple):
    completed: float  # s until the source says completed
    total: float  # s until judged (suite) or completed (raw)
    ram: float  # s of the RAM check: the suite's, or reading both QEMUs' memory on a raw pair
    ram_how: str  # the way the check read RAM
    pmemsave: float = 0.0  # s of the RAM check by pmemsave on the same raw pair
    differing: int = 0  # pages that differed on a raw pair (both ways found the same: QEMU 7.2's lost TCG writes)
    ready: float = 0.0  # s until the source was ready: booted and checked, or restored and proved
    cpu: float = 0.0  # CPU s of the pair's QEMUs (user + system), whole run


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # QEMUs that were stopped (and reaped)
    return usage.ru_utime + usage.ru_stime


def one(target, case_name: str, raw: bool, memory_mib: int | None,  # type: ignore[no-untyped-def]
        state: CheckedState | None = None) -> Run:
    catalogue = load_catalogue()
    if memory_mib:
        catalogue.defaults["memory_kib"] = memory_mib * 1024
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        out = Path(tmp)
        (out / "src").mkdir()
        (out / "dst").mkdir()
        case = catalogue.get(case_name)
        src = prepare_vm(case, target, catalogue, out, out / "src")
        dst = prepare_vm(case, target, catalogue, out, out / "dst", image_dir=out / "src")
        vms: list[GuestVm] = []
        try:
            started = time.monotonic()
            if state is None:
                source, destination = start_pair(src, dst, vms)
                ready = time.monotonic() - started
            else:
                source, _ = restore(state, src, vms, f"{case_name} restored", out, _alias_to(target.caps))
                ready = time.monotonic() - started
                destination = launch(dst, f"{case_name} destination", incoming=True)
                vms.append(destination)
            if raw:
                q, d = source.process.qmp, destination.process.qmp
                d.cmd("migrate-incoming", uri="unix:migrate.sock")
                started = time.monotonic()
                q.cmd("migrate", uri="unix:../dst/migrate.sock")
                while q.cmd("query-migrate").get("status") != "completed":
                    time.sleep(0.02)
                took = time.monotonic() - started
                while d.cmd("query-status").get("status") != "paused":  # loaded, still stopped (-S)
                    time.sleep(0.02)
                names = ram_region_names(destination.process.argv)
                fast, slow = (compare_ram(source, destination, names, fast=way) for way in (True, False))
                if fast.note or slow.note or fast.differing != slow.differing:  # the two ways must agree
                    raise SystemExit(f"{case_name}: raw pair: RAM check: {fast.record()} / {slow.record()}")
                return Run(took, took, fast.seconds, fast.method, slow.seconds, len(fast.differing), ready)
            started = time.monotonic()
            mig = migrate_vms(source, destination, failover=failover_pairs(devices(src.live.argv)),
                              timeouts=MigrationTimeouts.from_env())
            total = time.monotonic() - started
            if mig.verdict != "pass":
                raise SystemExit(f"{case_name}: {mig.verdict}: {mig.reason}")
            completed = next(s["t"] for s in mig.timeline if s["side"] == "source" and s["status"] == "completed")
            ram = mig.evidence.get("ram", {})
            return Run(completed, total, ram.get("seconds", 0.0), ram.get("method", "not compared"), ready=ready)
        finally:
            for vm in vms:
                vm.stop()


def checked(target, case_name: str, memory_mib: int | None, folder: Path) -> CheckedState | str:  # type: ignore[no-untyped-def]
    """Boot, check and save the case's source once, as a run does for the migrations of one build."""
    catalogue = load_catalogue()
    if memory_mib:
        catalogue.defaults["memory_kib"] = memory_mib * 1024
    case = catalogue.get(case_name)
    key = source_key(case, target, target, "", folder)
    assert key is not None, case_name
    return make_checked(case, target, catalogue, folder, None, key, "benchmark")


def _process_cpu(pid: int | None) -> float:
    """CPU s of a running process (user + system), from /proc: a kept source is not reaped between its runs."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resumed(target, case_name: str, runs: int, memory_mib: int | None) -> list[Run]:  # type: ignore[no-untyped-def]
    """Per run, the source kept after the migration before it (conformance/live/checked.py Resumable) resumed with
    cont and migrated into a fresh destination (what a run does for a key's second and later migrations, when the
    source is not a failover guest); each with the CPU s of its destination and the source's share meanwhile."""
    catalogue = load_catalogue()
    if memory_mib:
        catalogue.defaults["memory_kib"] = memory_mib * 1024
    case = catalogue.get(case_name)
    out: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-resumed-") as tmp:
        folder = Path(tmp)
        (folder / "src").mkdir()
        (folder / "d0").mkdir()
        src = prepare_vm(case, target, catalogue, folder, folder / "src")
        vms: list[GuestVm] = []
        try:
            source, destination = start_pair(src, prepare_vm(case, target, catalogue, folder, folder / "d0",
                                                             image_dir=folder / "src"), vms)
            mig = migrate_vms(source, destination, failover=[], timeouts=MigrationTimeouts.from_env())
            kept = _keepable(source, destination, src, {}, "d0") if mig.verdict == "pass" else None
            destination.stop()
            for i in range(1, runs + 1):
                if kept is None:
                    raise SystemExit(f"{case_name}: the source could not be kept: {mig.verdict}: {mig.reason}")
                (folder / f"d{i}").mkdir()
                dst = prepare_vm(case, target, catalogue, folder, folder / f"d{i}", image_dir=folder / "src")
                started, cpu = time.monotonic(), _process_cpu(source.process.pid) + _children_cpu()
                source, record = resume(kept, src, _alias_to(target.caps))
                ready = time.monotonic() - started
                destination = launch(dst, f"{case_name} destination {i}", incoming=True)
                vms.append(destination)
                started_mig = time.monotonic()
                mig = migrate_vms(source, destination, failover=[], timeouts=MigrationTimeouts.from_env())
                total = time.monotonic() - started_mig
                if mig.verdict != "pass":
                    raise SystemExit(f"{case_name}: resumed run {i}: {mig.verdict}: {mig.reason}")
                kept = _keepable(source, destination, src, {"resumed": record}, f"d{i}")
                source_cpu = _process_cpu(source.process.pid)
                destination.stop()
                completed = next(s["t"] for s in mig.timeline if s["side"] == "source" and s["status"] == "completed")
                out.append(Run(completed, total, mig.evidence.get("ram", {}).get("seconds", 0.0), "", ready=ready,
                               cpu=source_cpu + _children_cpu() - cpu))
        finally:
            for vm in vms:
                vm.stop()
    return out


def handed(target, case_name: str, runs: int, memory_mib: int | None  # type: ignore[no-untyped-def]
           ) -> list[tuple[float, float, str]]:
    """Per run, the boot stage's run_boot of the case with the key's one migration waiting (CheckedStates: the VM
    handed over paused), then that run_migrate: its seconds, its QEMUs' CPU s (``details.cpu_s``: the source's
    share after the hand-over, the destination's) and how the source was proved."""
    from collections import Counter

    from conformance.live.boot import run_boot
    from conformance.live.checked import CheckedStates
    from conformance.live.migrate import keep_checked, run_migrate

    catalogue = load_catalogue()
    if memory_mib:
        catalogue.defaults["memory_kib"] = memory_mib * 1024
    case = catalogue.get(case_name)
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-handed-") as tmp:
            folder = Path(tmp)
            key = source_key(case, target, target, "", folder)
            assert key is not None, case_name
            states = CheckedStates(Counter({key: 1}))
            try:
                boot = run_boot(case, target, catalogue, folder,
                                keep=keep_checked(states, case, target, catalogue, folder))
                if not str(boot.result.details.get("checked_state", "")).startswith("handed over"):
                    raise SystemExit(f"{case_name}: not handed over: {boot.result.verdict}: "
                                     f"{boot.result.details.get('checked_state', boot.result.reason)}")
                result = run_migrate(case, target, target, catalogue, folder, checked=states)
            finally:
                states.close()
            if result.verdict != "pass":
                raise SystemExit(f"{case_name}: handed-over run: {result.verdict}: {result.reason}")
            cpu = sum(float(v) for v in result.details.get("cpu_s", {}).values())
            out.append((result.duration_s, cpu, result.details["resumed"]["checks"][0]))
    return out


def handed_lines(target, runs: int, memory_mib: int | None) -> None:  # type: ignore[no-untyped-def]
    for case, label in (("q35-minimal", "plain"), ("teaming-q35", "failover")):
        found = handed(target, case, runs, memory_mib)
        print(f"{label} ({case}) per pair from the boot stage's VM handed over: checked migration "
              f"{statistics.median(f[0] for f in found):.2f} s ({statistics.median(f[1] for f in found):.2f} QEMU "
              f"CPU s, median of {runs}), QEMU {target.caps.version} x86_64 TCG, load "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def timed(run: Callable[[], Run]) -> Run:
    """A run with the CPU seconds of its QEMUs."""
    before = _children_cpu()
    result = run()
    return result._replace(cpu=_children_cpu() - before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-mib", type=int, default=None, help="guest RAM (default: the catalogue's)")
    parser.add_argument("--qemu", type=Path, help="this x86_64 build (default: the host's qemu-system-x86_64)")
    parser.add_argument("--handed-only", action="store_true", help="only the pairs from a handed-over boot VM")
    args = parser.parse_args()
    binary = args.qemu or shutil.which("qemu-system-x86_64")
    if not binary:
        print("qemu-system-x86_64 not installed", file=sys.stderr)
        return 2
    target = make_target(Path(binary), lambda _t: None)
    if args.handed_only:
        handed_lines(target, args.runs, args.memory_mib)
        return 0
    mib = args.memory_mib or load_catalogue().defaults["memory_kib"] // 1024
    figures = {}
    pairs = {}
    for case, label in (("q35-minimal", "plain"), ("teaming-q35", "failover")):
        floor = [one(target, case, True, args.memory_mib) for _ in range(args.runs)]
        suite = [timed(lambda case=case: one(target, case, False, args.memory_mib)) for _ in range(args.runs)]
        with tempfile.TemporaryDirectory(prefix="bench-checked-") as tmp:
            save_started, cpu = time.monotonic(), _children_cpu()
            state = checked(target, case, args.memory_mib, Path(tmp))
            save = (time.monotonic() - save_started, _children_cpu() - cpu)
            if isinstance(state, str):  # not saved: its pairs boot (a failover guest before QEMU 9.0)
                print(f"{label} ({case}): no checked state: {state}")
            restored = suite if isinstance(state, str) else [
                timed(lambda case=case, state=state: one(target, case, False, args.memory_mib, state))
                for _ in range(args.runs)]
        boot_ready, restore_ready = (statistics.median(r.ready for r in runs) for runs in (suite, restored))
        boot_pair, restore_pair = (statistics.median(r.ready + r.total for r in runs) for runs in (suite, restored))
        boot_cpu, restore_cpu = (statistics.median(r.cpu for r in runs) for runs in (suite, restored))
        restored_full = statistics.median(r.total for r in restored)
        pairs[label] = (boot_pair, restore_pair, restored_full, boot_cpu, restore_cpu)
        print(f"{label} ({case}) per pair: booted and checked source {boot_ready:.2f} s + checked migration = "
              f"{boot_pair:.2f} s ({boot_cpu:.1f} CPU s); " + ("its pairs boot" if isinstance(state, str) else
              f"restored from the checked state {restore_ready:.2f} s + checked migration {restored_full:.2f} s = "
              f"{restore_pair:.2f} s ({restore_cpu:.1f} CPU s); the state saved once in {save[0]:.2f} s "
              f"({save[1]:.1f} CPU s, {state.saved['bytes'] / 2**20:.0f} MiB, boot, checks and load check "
              "included)"))
        seen = statistics.median(s.completed for s in suite)
        full = statistics.median(s.total for s in suite)
        ram = statistics.median(s.ram for s in suite)
        fast, slow = statistics.median(f.ram for f in floor), statistics.median(f.pmemsave for f in floor)
        ways = ", ".join(sorted({s.ram_how for s in suite}))
        figures[label] = (statistics.median(f.total for f in floor), seen, full, ram, fast, slow)
        print(f"{label} ({case}, {mib} MiB): raw floor {figures[label][0]:.2f} s; suite sees completed at "
              f"{seen:.2f} s, judged with destination checks in {full:.2f} s, RAM check {ram:.3f} s of it ({ways}); "
              f"RAM check on the raw pairs: {fast:.3f} s reading QEMU's memory, {slow:.3f} s by pmemsave "
              f"(median of {args.runs})" + "".join(f"; a raw pair lost {f.differing} page(s), found both ways"
                                                   for f in floor if f.differing))
    (pf, ps, pfull, pram, pfast, pslow), (ff, fs, ffull, fram, _, _) = figures["plain"], figures["failover"]
    print(f"migrate: plain {ps:.2f} s median (raw {pf:.2f} s, suite adds {ps - pf:+.2f} s; checked {pfull:.1f} s), "
          f"failover {fs:.2f} s (raw {ff:.2f} s, {fs - ff:+.2f} s; checked {ffull:.1f} s); RAM check {pram:.3f} s "
          f"plain, {fram:.3f} s failover per {mib} MiB (pmemsave on the same pairs {pslow:.2f} s, now {pfast:.3f} s), "
          f"x86_64 TCG")
    handed_lines(target, args.runs, args.memory_mib)
    kept = resumed(target, "q35-minimal", args.runs, args.memory_mib)
    kr, kc = statistics.median(r.ready + r.total for r in kept), statistics.median(r.cpu for r in kept)
    print(f"plain (q35-minimal) per pair from a kept source (cont after the migration before): resumed "
          f"{statistics.median(r.ready for r in kept):.2f} s + checked migration "
          f"{statistics.median(r.total for r in kept):.2f} s = {kr:.2f} s ({kc:.1f} CPU s)")
    (pb, pr, pc, pbc, prc), (fb, fr, fc, fbc, frc) = pairs["plain"], pairs["failover"]
    print(f"migrate per pair: plain {pr:.2f} s from the checked state (checked migration {pc:.2f} s) against "
          f"{pb:.2f} s booting its source, {prc:.1f} against {pbc:.1f} CPU s; failover {fr:.2f} s ({fc:.2f} s) against "
          f"{fb:.2f} s, {frc:.1f} against {fbc:.1f} CPU s; plain from a kept source {kr:.2f} s, {kc:.1f} CPU s; "
          f"QEMU {target.caps.version} x86_64 TCG, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
