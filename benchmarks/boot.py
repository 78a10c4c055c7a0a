#!/usr/bin/env python3
"""Boot time: the raw QEMU floor against a whole boot stage run of the suite.

    python3 benchmarks/boot.py [--arch x86_64|aarch64] [--case q35-minimal] [-n RUNS]

raw:   QEMU started by hand (machine, -kernel/-initrd/-append, a console file), timed from
       spawn to the guest's END-OF-BOOT-REPORT: the floor.
suite: run_boot() of a case (render, schema, parse, argv, live adaptation, QEMU under QMP,
       boot report, in-guest and QMP checks, stop), timed end to end.
Runs alternate so both see the same machine load. Last line:
`boot: N.N s median x86_64 TCG (raw QEMU N.N s, the suite adds +N.NN s)`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from conformance.cases import load_catalogue
from conformance.live.boot import run_boot
from conformance.live.guest_report import ReportReader
from conformance.qemu.process import QemuProcess
from conformance.runner import make_target


def raw_boot(binary: Path, machine: str, boot_args: list[str], accel: str, folder: Path) -> float:
    console = folder / "console.log"
    args = ["-machine", machine, "-accel", accel, "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con", *boot_args]
    if machine == "virt":
        args += ["-cpu", "cortex-a57"]
    reader = ReportReader()
    started = time.perf_counter()
    with QemuProcess(binary, args, folder, name="raw boot", qmp=False) as qemu:
        if not reader.wait_file(console, lambda r: r.boot_complete, timeout=60, alive=qemu.is_running):
            raise SystemExit(f"raw boot failed: QEMU {qemu.wait(0.5).describe()}: {qemu.stderr_tail(3)}")
        return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    ap.add_argument("--case", help="case to boot (default: q35-minimal / virt-minimal)")
    ap.add_argument("-n", "--runs", type=int, default=7)
    ns = ap.parse_args()
    binary = shutil.which(f"qemu-system-{ns.arch}")
    if not binary:
        print(f"qemu-system-{ns.arch} not installed", file=sys.stderr)
        return 2
    machine = "q35" if ns.arch == "x86_64" else "virt"
    case_name = ns.case or f"{machine}-minimal"
    started = time.perf_counter()
    target = make_target(Path(binary), lambda _text: None)
    print(f"target: probe + accel + guest in {time.perf_counter() - started:.2f} s; accel {target.accel.accel} "
          f"({target.accel.reason})")
    assert target.guest is not None, target.guest_problem
    catalogue = load_catalogue()
    case = catalogue.get(case_name)
    raw, suite, to_report = [], [], []
    with tempfile.TemporaryDirectory(prefix="qemu-conformance-bench-") as tmp:
        for i in range(ns.runs):
            folder = Path(tmp) / f"raw{i}"
            folder.mkdir()
            raw.append(raw_boot(Path(binary), machine, target.guest.boot_args(direct=True), target.accel.accel, folder))
            started = time.perf_counter()
            result = run_boot(case, target, catalogue, Path(tmp) / "suite").result
            suite.append(time.perf_counter() - started)
            if result.verdict != "pass":
                raise SystemExit(f"suite boot failed: {result.reason}")
            to_report.append(result.details["boot_s"])
            print(f"run {i + 1}: raw {raw[-1]:.2f} s, suite {suite[-1]:.2f} s (cont -> report {to_report[-1]:.2f} s)")
    raw_m, suite_m = statistics.median(raw), statistics.median(suite)
    print(f"cont -> boot report inside the suite: {statistics.median(to_report):.2f} s median")
    print(f"boot: {suite_m:.1f} s median {ns.arch} {target.accel.accel.upper()} ({case_name}; raw QEMU "
          f"{raw_m:.2f} s, the suite adds {suite_m - raw_m:+.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
