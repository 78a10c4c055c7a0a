#!/usr/bin/env python3
"""The whole static matrix (every case x every capsdata/ fixture of its arch) in one process.

    python3 benchmarks/static.py [--repeat N] [--jobs N] [--profile N]

Each repetition uses a fresh StaticRunner, so rendering, schema validation and
parsing are paid again (once per case and arch) as in a real run; fixtures are
loaded once beforehand (a run loads each fixture once too). Each repetition
measures the matrix twice: on one core (one StaticRunner, pair after pair) and as
`qemu-conformance run --caps ...` computes it (conformance/runner.py static_runner:
the pairs computed ahead in ``--jobs`` forked processes, default the cores, then
handed out in order). Result writing and the report are not included.
``--profile N``: one more single-core repetition under cProfile, its top N functions.
Last line: `static: NNNN combinations/s (...)`, the figure as users run it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter

from conformance.caps.store import fixture_files, load
from conformance.cases import load_catalogue
from conformance.static import StaticRunner


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the prefetch workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ns = ap.parse_args()
    catalogue = load_catalogue()
    started = time.perf_counter()
    fixtures = [load(p) for p in fixture_files()]
    print(f"loaded {len(fixtures)} fixtures in {time.perf_counter() - started:.2f} s")
    combos = [(case, caps) for case in catalogue.cases.values() for caps in fixtures if caps.arch in case.arches]
    single: list[float] = []
    users: list[float] = []
    cpu_rates: dict[int, list[float]] = {1: [], ns.jobs: []}
    verdicts: Counter[str] = Counter()
    for i in range(ns.repeat):
        for rates, jobs in ((single, 1), (users, ns.jobs)):
            runner = StaticRunner(catalogue)
            verdicts.clear()
            started, cpu = time.perf_counter(), cpu_seconds()
            runner.prefetch(combos, jobs)
            for case, caps in combos:
                for outcome in runner.run(case, caps):
                    verdicts[outcome.verdict] += 1
            elapsed = time.perf_counter() - started
            for worker in multiprocessing.active_children():  # a worker's exit is not waited for: its CPU time
                worker.join()  # counts once it is reaped
            cpu = cpu_seconds() - cpu
            rates.append(len(combos) / elapsed)
            cpu_rates[jobs].append(len(combos) / cpu)
            print(f"run {i + 1}, {jobs} job{'s' if jobs > 1 else ''}: {len(combos)} combinations in {elapsed:.3f} s"
                  f" = {rates[-1]:.0f}/s ({cpu:.2f} CPU s = {cpu_rates[jobs][-1]:.0f} per CPU second)")
    print("stage verdicts per run: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    if ns.profile:
        import cProfile
        import pstats

        runner = StaticRunner(catalogue)
        profile = cProfile.Profile()
        profile.runcall(lambda: [runner.run(case, caps) for case, caps in combos])
        pstats.Stats(profile).sort_stats("cumulative").print_stats(ns.profile)
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    what = f"{len(catalogue.cases)} cases x {len(fixtures)} fixtures, {len(combos)} combinations, load {load_avg}"
    print(f"single core: {statistics.median(single):.0f} combinations/s, {statistics.median(cpu_rates[1]):.0f} per CPU"
          f" second; {ns.jobs} processes: {statistics.median(cpu_rates[ns.jobs]):.0f} per CPU second"
          f" (median of {ns.repeat}, {what})")
    print(f"static: {statistics.median(users):.0f} combinations/s (median of {ns.repeat}, as `run --caps` computes "
          f"them: {ns.jobs} processes; {what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
