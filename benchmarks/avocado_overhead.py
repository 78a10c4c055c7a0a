#!/usr/bin/env python3
"""avocado's overhead per test: the same work items under `avocado run` and under our own runner.

    python3 benchmarks/avocado_overhead.py [--cases q35-minimal,pc-minimal] [--stages parse,argv,boot] [-n RUNS]

own:     `qemu-conformance run --stages S --cases C -j 1` (probe once, then every item in one process)
avocado: `avocado run --max-parallel-tasks 1 qemu-conformance:C` with the same stages (one runner process
         per test, which does not import avocado; the probe cached on disk, artefacts sent back as file
         messages)
floor:   `avocado run --max-parallel-tasks 1 /bin/true` once and as many times as there are tests: what
         avocado costs per test and per job with its own exec-test runner (a process per test that imports
         avocado: most of that per-test figure), whatever the test
Both sequential on the host's qemu-system-x86_64, runs alternating so both see the same load; wall time
of the whole command. Last line:
`avocado: +N.NN s per test over our own runner (median of R runs, T tests; own N.N s, avocado N.N s;
avocado alone: N.NN s per /bin/true test + N.N s per job)`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    took = time.perf_counter() - started
    if out.returncode not in (0, 1):  # 1: a case failed, which is a result, not a broken benchmark
        raise SystemExit(f"{command[0]} exited {out.returncode}: {out.stderr[-500:] or out.stdout[-500:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="q35-minimal,pc-minimal")
    ap.add_argument("--stages", default="parse,argv,boot")
    ap.add_argument("-n", "--runs", type=int, default=3)
    ns = ap.parse_args()
    binary = shutil.which("qemu-system-x86_64")
    avocado = shutil.which("avocado")
    if not binary or not avocado:
        print("needs qemu-system-x86_64 and avocado (pip install -e '.[avocado]')", file=sys.stderr)
        return 2
    cases, stages = ns.cases.split(","), ns.stages.split(",")
    with tempfile.TemporaryDirectory(prefix="avocado-overhead-") as tmp:
        work = Path(tmp)
        conf = work / "avocado.conf"
        conf.write_text(f"[qemu_conformance]\nqemu = {json.dumps([binary])}\nstages = {json.dumps(stages)}\n")
        own_cmd = ["qemu-conformance", "run", "--stages", ns.stages, "--qemu", binary, "-j", "1",
                   *(a for c in cases for a in ("--cases", c))]
        avo_cmd = [avocado, "--config", str(conf), "run", "--max-parallel-tasks", "1", "--job-results-dir",
                   str(work / "jobs"), f"qemu-conformance:{ns.cases}"]
        timed([*own_cmd, "-o", str(work / "warm")])  # guest build, accelerator decision, probe cache: once
        timed(avo_cmd)
        tests = sum(1 for _ in (work / "warm").joinpath("results.jsonl").open())
        floor_cmd = [avocado, "run", "--max-parallel-tasks", "1", "--job-results-dir", str(work / "jobs")]
        own, avo, one, many = [], [], [], []
        for i in range(ns.runs):
            own.append(timed([*own_cmd, "-o", str(work / f"own-{i}")]))
            avo.append(timed(avo_cmd))
            one.append(timed([*floor_cmd, "/bin/true"]))
            many.append(timed([*floor_cmd, *["/bin/true"] * tests]))
            print(f"run {i + 1}: own {own[-1]:.2f} s, avocado {avo[-1]:.2f} s ({tests} tests); avocado with 1 and "
                  f"{tests} x /bin/true: {one[-1]:.2f} s, {many[-1]:.2f} s", flush=True)
    own_s, avo_s = statistics.median(own), statistics.median(avo)
    per_test = (statistics.median(many) - statistics.median(one)) / (tests - 1)
    per_job = statistics.median(one) - per_test
    print(f"avocado: {(avo_s - own_s) / tests:+.2f} s per test over our own runner (median of {ns.runs} runs, "
          f"{tests} tests; own {own_s:.1f} s, avocado {avo_s:.1f} s; avocado alone: {per_test:.2f} s per "
          f"/bin/true test + {per_job:.1f} s per job)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
