"""The static migration prediction over every ordered pair of the prepared builds, every shared machine type
and every case (issue 17): cold (empty vmstate cache) and from the cache. Prints the headline last.

    python benchmarks/sweep.py [--cached-only]

The live sweep's figure (``--live``: boot,migrate --machines all) is to be added by its owner.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from conformance.coverage import default_binaries
from conformance.machines import MachineChoice
from conformance.paths import cache_dir
from conformance.runner import run_stages


def sweep(binaries: list[Path]) -> float:
    with tempfile.TemporaryDirectory(prefix="sweep-") as out:
        started = time.monotonic()
        run_stages(["vmstate"], binaries, [], Path(out), lambda _m: None, machines=MachineChoice.parse("all"))
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cached-only", action="store_true", help="keep the vmstate cache (no cold run)")
    args = parser.parse_args()
    binaries = default_binaries()
    cold = None
    if not args.cached_only:
        shutil.rmtree(cache_dir() / "vmstate", ignore_errors=True)
        cold = sweep(binaries)
    cached = sweep(binaries)
    print(f"static prediction, {len(binaries)} builds, --machines all: "
          f"{'' if cold is None else f'cold {cold:.1f} s, '}cached {cached:.1f} s (probes and report included)")


if __name__ == "__main__":
    main()
