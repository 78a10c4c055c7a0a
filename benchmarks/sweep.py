"""The static migration prediction over every ordered pair of the prepared builds, every shared machine type
and every case (issue 17): cold (empty vmstate cache) and from the cache. Prints the headline last.

    python benchmarks/sweep.py [--cached-only]

The live sweep's figure (``--live``: boot,migrate --machines all) is to be added by its owner.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from conformance.coverage import default_binaries
from conformance.machines import MachineChoice
from conformance.paths import cache_dir
from conformance.runner import run_stages


def sweep(binaries: list[Path]) -> tuple[float, float, str]:
    """(wall s, CPU s of this process and its QEMUs, the stage's own line: predictions and seconds)."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sweep-") as out:
        cpu = _cpu()
        started = time.monotonic()
        run_stages(["vmstate"], binaries, [], Path(out), lines.append, machines=MachineChoice.parse("all"))
        wall = time.monotonic() - started
    stage = next((line.strip() for line in lines if line.strip().startswith("vmstate:")), "")
    return wall, _cpu() - cpu, stage


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cached-only", action="store_true", help="keep the vmstate cache (no cold run)")
    args = parser.parse_args()
    binaries = default_binaries()
    parts = []
    if not args.cached_only:
        shutil.rmtree(cache_dir() / "vmstate", ignore_errors=True)
        wall, cpu, stage = sweep(binaries)
        print(f"cold:   {wall:.1f} s wall, {cpu:.1f} s CPU; {stage}")
        parts.append(f"cold {wall:.1f} s")
    wall, cpu, stage = sweep(binaries)
    print(f"cached: {wall:.1f} s wall, {cpu:.1f} s CPU; {stage}")
    parts.append(f"cached {wall:.1f} s")
    print(f"static prediction, {len(binaries)} builds, --machines all (probe of each build and report included): "
          f"{', '.join(parts)}")


if __name__ == "__main__":
    main()
