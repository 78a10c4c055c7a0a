"""Migration: the raw QMP floor beside the suite's migrate stage, on the host's x86_64 QEMU (TCG).

For a plain case (q35-minimal) and a failover case (teaming-q35), each run boots a checked source and a
waiting destination (the suite's own start_pair), then migrates:
- raw: migrate-incoming + migrate, then query-migrate every 20 ms until ``completed`` (the floor);
- suite: migrate_vms, timed twice: until the migration is judged complete (status seen and the
  destination running) and in full (with the destination's checks: heartbeat, re-plug, QMP).
The last line is the headline.

    python3 benchmarks/migrate.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from conformance.argv.options import devices
from conformance.cases import load_catalogue
from conformance.live.boot import prepare_vm
from conformance.live.checks import failover_pairs
from conformance.live.migrate import MigrationTimeouts, migrate_vms, start_pair
from conformance.live.vm import GuestVm
from conformance.runner import make_target


def one(target, case_name: str, raw: bool) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    catalogue = load_catalogue()
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        out = Path(tmp)
        (out / "src").mkdir()
        (out / "dst").mkdir()
        case = catalogue.get(case_name)
        src = prepare_vm(case, target, catalogue, out, out / "src")
        dst = prepare_vm(case, target, catalogue, out, out / "dst", image_dir=out / "src")
        vms: list[GuestVm] = []
        try:
            source, destination = start_pair(src, dst, vms)
            if raw:
                q, d = source.process.qmp, destination.process.qmp
                d.cmd("migrate-incoming", uri="unix:migrate.sock")
                started = time.monotonic()
                q.cmd("migrate", uri="unix:../dst/migrate.sock")
                while q.cmd("query-migrate").get("status") != "completed":
                    time.sleep(0.02)
                took = time.monotonic() - started
                return took, took
            started = time.monotonic()
            mig = migrate_vms(source, destination, failover=failover_pairs(devices(src.live.argv)),
                              timeouts=MigrationTimeouts.from_env())
            total = time.monotonic() - started
            if mig.verdict != "pass":
                raise SystemExit(f"{case_name}: {mig.verdict}: {mig.reason}")
            completed = next(s["t"] for s in mig.timeline if s["side"] == "source" and s["status"] == "completed")
            return completed, total
        finally:
            for vm in vms:
                vm.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    binary = shutil.which("qemu-system-x86_64")
    if not binary:
        print("qemu-system-x86_64 not installed", file=sys.stderr)
        return 2
    target = make_target(Path(binary), lambda _t: None)
    figures = {}
    for case, label in (("q35-minimal", "plain"), ("teaming-q35", "failover")):
        floor = [one(target, case, raw=True)[0] for _ in range(args.runs)]
        suite = [one(target, case, raw=False) for _ in range(args.runs)]
        seen = statistics.median(s[0] for s in suite)
        full = statistics.median(s[1] for s in suite)
        figures[label] = (statistics.median(floor), seen, full)
        print(f"{label} ({case}): raw floor {statistics.median(floor):.2f} s; suite sees completed at "
              f"{seen:.2f} s, judged with destination checks in {full:.2f} s (median of {args.runs})")
    (pf, ps, pfull), (ff, fs, ffull) = figures["plain"], figures["failover"]
    print(f"migrate: plain {ps:.2f} s median (raw {pf:.2f} s, suite adds {ps - pf:+.2f} s; checked {pfull:.1f} s), "
          f"failover {fs:.2f} s (raw {ff:.2f} s, {fs - ff:+.2f} s; checked {ffull:.1f} s), x86_64 TCG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
