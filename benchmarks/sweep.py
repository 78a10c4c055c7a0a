"""The static migration prediction over every ordered pair of the prepared builds, every shared machine type
and every case (issue 17): cold (an empty vmstate cache) and from the cache. Prints both figures, wall and
CPU seconds (this process and its QEMUs: other work shares the cores) and the load average, as its last line.

    python benchmarks/sweep.py [--cached-only]

The cold run gets a vmstate cache of its own (a temporary $QEMU_CONFORMANCE_CACHE whose other folders, the
builds and the probes, are the real ones), so the benchmark never empties the cache other runs use; the
cached run reads what the cold run wrote. ``--cached-only`` measures the real cache as it is.

The live sweep's figure (``--live``: boot,migrate --machines all) is to be added by its owner.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def own_vmstate_cache(folder: Path) -> None:
    """Point $QEMU_CONFORMANCE_CACHE at ``folder``: links to every folder of the real cache but vmstate/."""
    real = cache_dir()
    for entry in real.iterdir() if real.is_dir() else []:
        if entry.name != "vmstate":
            (folder / entry.name).symlink_to(entry)
    os.environ["QEMU_CONFORMANCE_CACHE"] = str(folder)
    os.environ.setdefault("QEMU_CONFORMANCE_BUILDS", str(real / "builds"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cached-only", action="store_true", help="measure the real vmstate cache (no cold run)")
    args = parser.parse_args()
    binaries = default_binaries()
    parts = []
    with tempfile.TemporaryDirectory(prefix="sweep-cache-") as cache:
        if not args.cached_only:
            own_vmstate_cache(Path(cache))
            wall, cpu, stage = sweep(binaries)
            print(f"cold:   {wall:.1f} s wall, {cpu:.1f} s CPU; {stage}")
            parts.append(f"cold {wall:.1f} s ({cpu:.1f} s CPU)")
        wall, cpu, stage = sweep(binaries)
        print(f"cached: {wall:.1f} s wall, {cpu:.1f} s CPU; {stage}")
        parts.append(f"cached {wall:.1f} s ({cpu:.1f} s CPU)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"static prediction, {len(binaries)} builds, --machines all (probe of each build and report included): "
          f"{', '.join(parts)}; load average {load} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
