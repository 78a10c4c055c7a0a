#!/usr/bin/env python3
"""The whole static matrix (every case x every capsdata/ fixture of its arch) in one process.

    python3 benchmarks/static.py [--repeat N]

Each repetition uses a fresh StaticRunner, so rendering, schema validation and
parsing are paid again (once per case and arch) as in a real run; fixtures are
loaded once beforehand (a run loads each fixture once too). Last line:
`static: NNNN combinations/s (...)`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

from conformance.caps.store import fixture_files, load
from conformance.cases import load_catalogue
from conformance.static import StaticRunner


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ns = ap.parse_args()
    catalogue = load_catalogue()
    started = time.perf_counter()
    fixtures = [load(p) for p in fixture_files()]
    print(f"loaded {len(fixtures)} fixtures in {time.perf_counter() - started:.2f} s")
    combos = [(case, caps) for case in catalogue.cases.values() for caps in fixtures if caps.arch in case.arches]
    rates = []
    verdicts: Counter[str] = Counter()
    for i in range(ns.repeat):
        runner = StaticRunner(catalogue)
        verdicts.clear()
        started = time.perf_counter()
        for case, caps in combos:
            for outcome in runner.run(case, caps):
                verdicts[outcome.verdict] += 1
        elapsed = time.perf_counter() - started
        rates.append(len(combos) / elapsed)
        print(f"run {i + 1}: {len(combos)} combinations in {elapsed:.3f} s = {rates[-1]:.0f}/s")
    print("stage verdicts per run: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    print(f"static: {statistics.median(rates):.0f} combinations/s (median of {ns.repeat}, {len(catalogue.cases)} cases"
          f" x {len(fixtures)} fixtures, {len(combos)} combinations, one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
