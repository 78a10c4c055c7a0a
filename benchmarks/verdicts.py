"""Compare the verdicts of two runs of the same matrix (before and after a change): each item whose verdict
differs, or that only one run has. Items are named as benchmarks/stability.py names them (stage, case,
build->peer, arch, machine type). A result only one run has because it exists only where a checked state
was saved (a checked state its own build cannot load: ``... state-load``, no planned item) is listed as new
or gone, not as a difference: a key with one migration hands its boot VM over instead of saving a state
(conformance/live/checked.py), so it has none; its migration's own verdict is compared as any other. The
last line is the headline; the exit status is 1 when a verdict differs.

    python3 benchmarks/verdicts.py BEFORE/results.jsonl AFTER/results.jsonl

    verdicts: 192 items, 191 the same, 1 differ: boot teaming-q35 5.2.0 x86_64 (fail -> pass)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.results.records import StageResult, read_results

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is no package
from stability import item_key


def verdicts(path: Path) -> dict[str, tuple[str, StageResult]]:
    return {item_key(r): (r.verdict, r) for r in read_results(path)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="results.jsonl of the run before")
    parser.add_argument("after", type=Path, help="results.jsonl of the run after")
    parser.add_argument("-v", "--verbose", action="store_true", help="each differing item's two reasons too")
    args = parser.parse_args()
    before, after = verdicts(args.before), verdicts(args.after)
    differ = []
    new = sorted(k for k in set(after) - set(before) if k.endswith(" state-load"))
    gone = sorted(k for k in set(before) - set(after) if k.endswith(" state-load"))
    for key in new:
        print(f"new result: {key} ({after[key][0]}): {after[key][1].reason[:200]}")
    for key in gone:
        print(f"gone result (no state saved): {key} ({before[key][0]}): {before[key][1].reason[:200]}")
    for key in sorted((set(before) | set(after)) - set(new) - set(gone)):
        was, now = before.get(key), after.get(key)
        if was is None or now is None or was[0] != now[0]:
            differ.append(f"{key} ({was[0] if was else 'absent'} -> {now[0] if now else 'absent'})")
            if args.verbose:
                for label, found in (("before", was), ("after", now)):
                    if found is not None:
                        print(f"  {label}: {found[1].reason[:300]}")
                print(f"{differ[-1]}")
    items = len((set(before) | set(after)) - set(new) - set(gone))
    print(f"verdicts: {items} items, {items - len(differ)} the same, {len(differ)} differ"
          + (f": {'; '.join(differ)}" if differ else "") + (f" (and {len(new)} new state-load results)" if new else "")
          + (f" (and {len(gone)} state-load results gone)" if gone else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
