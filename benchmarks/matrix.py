"""The whole live matrix: every bootable case booted on every build, and migrated on every same-arch pair
(each build with itself and across builds both ways), as `qemu-conformance run --stages boot,migrate`
runs it. Builds: the host's qemu-system-x86_64 and -aarch64 plus the prepared 10.0 and 5.2 builds
(`qemu-conformance builds fetch`). The last line is the headline.

    python3 benchmarks/matrix.py [--jobs N] [-o DIR] [--qemu PATH ...] [--cases GLOB ...]

``--cases`` runs a selection of the catalogue (the headline then says which), for a quicker comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from conformance.builds import find_qemu
from conformance.runner import run_stages


def builds() -> list[Path]:
    found = [Path(p) for p in (shutil.which("qemu-system-x86_64"), shutil.which("qemu-system-aarch64")) if p]
    for name in ("10.0", "5.2"):
        for arch in ("x86_64", "aarch64"):
            path = find_qemu(name, arch)
            if path is not None:
                found.append(path)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="live jobs at a time (default: the runner's, the cores)")
    parser.add_argument("-o", "--output", type=Path, help="keep the results here (default: a temporary folder)")
    parser.add_argument("--qemu", action="append", type=Path, help="these binaries instead (repeatable)")
    parser.add_argument("--cases", nargs="+", default=[], metavar="GLOB", help="only these cases (default: all)")
    args = parser.parse_args()
    binaries = args.qemu or builds()
    out = args.output or Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    started = time.monotonic()
    run_stages(["boot", "migrate"], binaries, args.cases, out, lambda text: print(text, flush=True), jobs=args.jobs)
    took = time.monotonic() - started
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    by_stage = Counter(r["stage"] for r in results)
    verdicts = Counter(r["verdict"] for r in results)
    if args.output is None:
        shutil.rmtree(out, ignore_errors=True)
    print(f"builds: {len(binaries)}; verdicts: {', '.join(f'{v} {n}' for v, n in sorted(verdicts.items()))}")
    print(f"matrix: {by_stage['boot']} boots + {by_stage['migrate']} migrations in {took / 60:.1f} min "
          f"({len(binaries)} builds, {os.cpu_count()} cores"
          + (f", cases {' '.join(args.cases)}" if args.cases else "") + ")")


if __name__ == "__main__":
    main()
