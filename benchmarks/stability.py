"""Verdict stability: the host qualification (the README's main job) N times, and every item whose
verdict is not the same in every run. A flip is an item with two or more verdicts across the runs (or
missing from a run). The last line is the headline:

    stability: 0 flips in 3 runs of 142 items
    stability: 2 flips in 3 runs of 142 items: migrate teaming-q35 7.2.22->7.2.22 x86_64 (pass, fail, pass); ...

    python3 benchmarks/stability.py [--runs N] [--jobs J] [-o DIR] [--qemu PATH ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from conformance.results.records import StageResult, read_results


def item_key(r: StageResult) -> str:
    """One work item, as the runs name it: stage, case, build (and peer, machine type), arch; a checked state
    its own build cannot load (conformance/live/checked.py) is the item ``... state-load``."""
    build = r.qemu.version if r.qemu else "?"
    if r.peer is not None:
        build += f"->{r.peer.version}"
    machine = r.details.get("machine", "")
    load = "state-load" if r.details.get("state_load") else ""
    return " ".join(p for p in (r.stage, r.case, build, r.arch, machine, load) if p)


def run_once(output: Path, jobs: int | None, qemu: list[str]) -> tuple[dict[str, str], float, int]:
    """One qualification into ``output``: ({item: verdict}, seconds, exit code)."""
    command = [sys.executable, "-m", "conformance.cli", "qualify", "-o", str(output)]
    command += [f"--jobs={jobs}"] if jobs else []
    for binary in qemu:
        command += ["--qemu", binary]
    started = time.monotonic()
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = time.monotonic() - started
    tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"  run into {output}: exit {proc.returncode} in {took:.0f} s: {tail[0]}", flush=True)
    return {item_key(r): r.verdict for r in read_results(output / "results.jsonl")}, took, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many qualifications (default 3)")
    parser.add_argument("--jobs", type=int, help="live jobs at a time (default: the suite's)")
    parser.add_argument("-o", "--output", type=Path, help="keep every run's folder here (default: temporary)")
    parser.add_argument("--qemu", action="append", default=[], help="these binaries (default: the host's)")
    args = parser.parse_args()
    out = args.output or Path(tempfile.mkdtemp(prefix="bench-stability-"))
    runs = []
    for i in range(1, args.runs + 1):
        print(f"run {i}/{args.runs}", flush=True)
        verdicts, _took, _code = run_once(out / f"run-{i}", args.jobs, args.qemu)
        runs.append(verdicts)
    items = sorted(set().union(*runs))
    flips = []
    for item in items:
        seen = [run.get(item, "missing") for run in runs]
        if len(set(seen)) > 1:
            flips.append(f"{item} ({', '.join(seen)})")
    totals = Counter(v for run in runs for v in run.values())
    print(f"verdicts over all runs: {', '.join(f'{v} {n}' for v, n in sorted(totals.items()))}")
    if args.output is None:
        shutil.rmtree(out, ignore_errors=True)
    headline = f"stability: {len(flips)} flips in {len(runs)} runs of {len(items)} items"
    print(headline + (": " + "; ".join(flips) if flips else ""))


if __name__ == "__main__":
    main()
