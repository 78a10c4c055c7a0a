#!/usr/bin/env python3
"""Boot time: the raw QEMU floor (bzImage and, on x86_64, the kernel's ELF) against the suite's boot stage.

    python3 benchmarks/boot.py [--arch x86_64|aarch64] [--qemu PATH] [--case q35-minimal]
                               [--machine TYPE] [--flavour cloud|generic] [-n RUNS] [--raw-only]
                               [--initrd NAME=FILE ...]

raw:   QEMU started by hand (machine, -kernel/-initrd/-append, a console file), timed from spawn to the
       guest's END-OF-BOOT-REPORT: the floor. On x86_64 each run boots the bzImage and then the kernel's
       own ELF at its PVH entry (conformance/live/guest.py direct_kernel), when it has one; the CPU seconds
       QEMU used (user + system) are its own, read from the process's rusage. Each --initrd NAME=FILE adds
       a raw bzImage boot with FILE in place of the guest's initramfs (e.g. the same cpio packed otherwise).
suite: run_boot() of a case (render, schema, parse, argv, live adaptation, QEMU under QMP, boot report,
       in-guest and QMP checks, stop), timed end to end, with the suite's own kernel choice
       (conformance/live/boot.py direct_boot). --raw-only skips it.
Runs alternate so all see the same machine load (`uptime` is printed before and after). Last lines:
`raw CPU s per boot: bzImage N.N, ELF N.N (-N.N)` and
`boot: N.N s median x86_64 TCG (raw QEMU N.N s, the suite adds +N.NN s)`.
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
from pathlib import Path

from conformance.cases import load_catalogue
from conformance.live.boot import run_boot
from conformance.live.guest import build_guest, direct_kernel
from conformance.live.guest_report import ReportReader
from conformance.qemu.process import QemuProcess
from conformance.runner import make_target


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raw_boot(binary: Path, machine: str, boot_args: list[str], accel: str, folder: Path) -> tuple[float, float]:
    """Seconds from spawn to the boot report, and the CPU seconds QEMU used (it is reaped before this returns)."""
    console = folder / "console.log"
    args = ["-machine", machine, "-accel", accel, "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con", *boot_args]
    if machine == "virt":
        args += ["-cpu", "cortex-a57"]
    reader = ReportReader()
    cpu = _children_cpu()
    started = time.perf_counter()
    with QemuProcess(binary, args, folder, name="raw boot", qmp=False) as qemu:
        if not reader.wait_file(console, lambda r: r.boot_complete, timeout=120, alive=qemu.is_running):
            raise SystemExit(f"raw boot failed: QEMU {qemu.wait(0.5).describe()}: {qemu.stderr_tail(3)}")
        took = time.perf_counter() - started
    return took, _children_cpu() - cpu


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    ap.add_argument("--qemu", type=Path, help="QEMU binary (default: the host's qemu-system-ARCH)")
    ap.add_argument("--case", help="case to boot (default: q35-minimal / virt-minimal)")
    ap.add_argument("--machine", help="machine type of the raw boots (default: q35 / virt)")
    ap.add_argument("--flavour", default="cloud", choices=["cloud", "generic"], help="guest of the raw boots")
    ap.add_argument("-n", "--runs", type=int, default=7)
    ap.add_argument("--raw-only", action="store_true", help="only the raw boots, not the suite's")
    ap.add_argument("--initrd", action="append", default=[], metavar="NAME=FILE",
                    help="also boot the bzImage raw with FILE as its initramfs (repeatable)")
    ns = ap.parse_args()
    binary = str(ns.qemu) if ns.qemu else shutil.which(f"qemu-system-{ns.arch}")
    if not binary or not Path(binary).exists():
        print(f"qemu-system-{ns.arch} not installed", file=sys.stderr)
        return 2
    machine = ns.machine or ("q35" if ns.arch == "x86_64" else "virt")
    case_name = ns.case or f"{'q35' if ns.arch == 'x86_64' else 'virt'}-minimal"
    started = time.perf_counter()
    target = make_target(Path(binary), lambda _text: None)
    print(f"target: probe + accel + guest in {time.perf_counter() - started:.2f} s; accel {target.accel.accel} "
          f"({target.accel.reason}); load {_load()}")
    assert target.guest is not None, target.guest_problem
    guest = build_guest(ns.arch, flavour=ns.flavour)
    kinds = {"bzImage": guest.boot_args()}
    if direct_kernel(guest) is not None:
        kinds["ELF"] = guest.boot_args(direct=True)
    for item in ns.initrd:
        name, sep, file = item.partition("=")
        if not sep or not Path(file).is_file():
            raise SystemExit(f"--initrd {item}: want NAME=FILE, an existing initramfs file")
        args = guest.boot_args()
        args[args.index("-initrd") + 1] = file
        kinds[name] = args
    catalogue = load_catalogue()
    case = catalogue.get(case_name)
    raw: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    suite, to_report = [], []
    with tempfile.TemporaryDirectory(prefix="qemu-conformance-bench-") as tmp:
        for i in range(ns.runs):
            line = []
            for kind, boot_args in kinds.items():
                folder = Path(tmp) / f"raw-{kind}-{i}"
                folder.mkdir()
                raw[kind].append(raw_boot(Path(binary), machine, boot_args, target.accel.accel, folder))
                line.append(f"raw {kind} {raw[kind][-1][0]:.2f} s / {raw[kind][-1][1]:.2f} CPU s")
            if not ns.raw_only:
                started = time.perf_counter()
                result = run_boot(case, target, catalogue, Path(tmp) / "suite").result
                suite.append(time.perf_counter() - started)
                if result.verdict != "pass":
                    raise SystemExit(f"suite boot failed: {result.reason}")
                to_report.append(result.details["boot_s"])
                line.append(f"suite {suite[-1]:.2f} s (cont -> report {to_report[-1]:.2f} s)")
            print(f"run {i + 1}: " + ", ".join(line), flush=True)
    print(f"load after: {_load()}")
    cpu = {kind: statistics.median(c for _, c in runs) for kind, runs in raw.items()}
    print(f"raw CPU s per boot ({ns.flavour} guest, {machine}, median of {ns.runs}): "
          + ", ".join(f"{kind} {value:.2f}" for kind, value in cpu.items())
          + (f" ({cpu['ELF'] - cpu['bzImage']:+.2f})" if "ELF" in cpu else ""))
    raw_m = statistics.median(t for t, _ in raw["bzImage"])
    if suite:
        suite_m = statistics.median(suite)
        print(f"cont -> boot report inside the suite: {statistics.median(to_report):.2f} s median")
        print(f"boot: {suite_m:.1f} s median {ns.arch} {target.accel.accel.upper()} ({case_name}; raw QEMU "
              f"{raw_m:.2f} s (bzImage), the suite adds {suite_m - raw_m:+.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
