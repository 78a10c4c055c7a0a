#!/usr/bin/env python3
"""Time the whole `qemu-conformance probe BINARY -o FILE` command (Python start-up included).

    python3 benchmarks/probe.py [--binary PATH] [-n RUNS]

Prints one line per run and, last, the median: `probe: 0.NNN s median (N runs, BINARY)`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=shutil.which("qemu-system-x86_64"), help="QEMU binary to probe")
    ap.add_argument("-n", "--runs", type=int, default=15)
    ns = ap.parse_args()
    if not ns.binary:
        print("qemu-system-x86_64 not installed; pass --binary", file=sys.stderr)
        return 2
    cli = shutil.which("qemu-conformance") or "qemu-conformance"
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "caps.xml"
        for i in range(ns.runs):
            started = time.perf_counter()
            subprocess.run([cli, "probe", ns.binary, "-o", str(out)], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
            print(f"run {i + 1}: {times[-1]:.3f} s")
    print(f"probe: {statistics.median(times):.3f} s median ({ns.runs} runs, {ns.binary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
