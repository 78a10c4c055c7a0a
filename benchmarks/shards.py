#!/usr/bin/env python3
"""Sharding's cost: the n shards' summed wall time against one unsharded run of the same work.

    python3 benchmarks/shards.py [--stages parse,argv] [--cases GLOB ...] [-n SHARDS] [-r RUNS]

Each run is `qemu-conformance run --stages S --qemu qemu-system-x86_64 --qemu qemu-system-aarch64 -j 1`,
whole and as --shard 1/N ... N/N one after the other (as N CI jobs would, on one machine); runs alternate
so both see the same load. Every shard probes each binary again: that fixed cost is what sharding adds.
Last line: `shards: N shards sum N.N s vs unsharded N.N s (+N.N s, +N%; median of R runs, T results)`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if out.returncode not in (0, 1):
        raise SystemExit(f"exit {out.returncode}: {out.stderr[-500:]}")
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="parse,argv")
    ap.add_argument("--cases", action="append", default=[])
    ap.add_argument("-n", "--shards", type=int, default=4)
    ap.add_argument("-r", "--runs", type=int, default=3)
    ns = ap.parse_args()
    base = ["qemu-conformance", "run", "--stages", ns.stages, "--qemu", "qemu-system-x86_64", "--qemu",
            "qemu-system-aarch64", "-j", "1", *(a for c in ns.cases for a in ("--cases", c))]
    whole, sharded = [], []
    with tempfile.TemporaryDirectory(prefix="shards-bench-") as tmp:
        work = Path(tmp)
        timed([*base, "-o", str(work / "warm")])
        results = sum(1 for _ in (work / "warm" / "results.jsonl").open())
        for r in range(ns.runs):
            whole.append(timed([*base, "-o", str(work / f"whole-{r}")]))
            sharded.append(sum(timed([*base, "--shard", f"{i}/{ns.shards}", "-o", str(work / f"s{r}-{i}")])
                               for i in range(1, ns.shards + 1)))
            print(f"run {r + 1}: unsharded {whole[-1]:.2f} s, {ns.shards} shards {sharded[-1]:.2f} s", flush=True)
    w, s = statistics.median(whole), statistics.median(sharded)
    print(f"shards: {ns.shards} shards sum {s:.1f} s vs unsharded {w:.1f} s ({s - w:+.1f} s, {(s - w) / w:+.0%}; "
          f"median of {ns.runs} runs, {results} results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
