#!/usr/bin/env python3
"""Measure device coverage: `qemu-conformance coverage --json` on the host's QEMU and the prepared builds.

    python3 benchmarks/coverage.py [--qemu PATH ...] [--cold]

Runs the command once (``--cold``: first with ``--no-cache``, asking every build again) and then once
from the cache, prints a line per build and family, and last, per build:
`coverage: 7.2.22 q35 N/M (P%), pc N/M (P%), virt N/M (P%); 10.0.2 ...; ... (cold A s, cached B s)`,
where M is what the family offers less what cannot be covered here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time


def run(cli: str, qemus: list[str], *extra: str) -> tuple[list[dict[str, object]], float]:
    started = time.perf_counter()
    args = [cli, "coverage", "--json", *extra]
    for qemu in qemus:
        args += ["--qemu", qemu]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    return json.loads(proc.stdout), time.perf_counter() - started


def main() -> int:
    from conformance.coverage import headline, summary

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qemu", action="append", default=[], help="QEMU binary (default: the host's and the builds')")
    ap.add_argument("--cold", action="store_true", help="first ask every build again (--no-cache)")
    ns = ap.parse_args()
    cli = shutil.which("qemu-conformance") or "qemu-conformance"
    timings = []
    if ns.cold:
        _, cold = run(cli, ns.qemu, "--no-cache")
        timings.append(f"cold {cold:.1f} s")
    results, cached = run(cli, ns.qemu)
    timings.append(f"cached {cached:.1f} s")
    for row in results:
        s = summary(row)
        print(f"{row['build']} {row['arch']} {row['family']}: offered {s['offered']}, covered {s['covered']}, "
              f"not coverable {s['not_coverable']}, uncovered {len(s['uncovered'])} ({s['percent']:.1f}%)")
    print(f"coverage: {headline(results)} ({', '.join(timings)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
