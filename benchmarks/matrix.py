"""The whole live matrix: every bootable case booted on every build, and migrated on every same-arch pair
(each build with itself and across builds both ways), as `qemu-conformance run --stages boot,migrate`
runs it. Builds: the host's qemu-system-x86_64 and -aarch64 plus the prepared 10.0 and 5.2 builds
(`qemu-conformance builds fetch`). The last line is the headline.

    python3 benchmarks/matrix.py [--jobs N] [-o DIR] [--qemu PATH ...] [--cases GLOB ...]

``--cases`` runs a selection of the catalogue (the headline then says which), for a quicker comparison.
Before the headline, a profile of the run: where the item seconds went (boots by build and guest kind,
migrations by where their source came from, and their phases). ``--profile RESULTS.jsonl`` prints only
that profile, of an earlier run.

Item seconds add up every item's own duration; with J jobs the wall clock is about their sum / J.
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
from conformance.cases import load_catalogue
from conformance.machines import FROM_NEWEST
from conformance.runner import run_stages


def builds() -> list[Path]:
    found = [Path(p) for p in (shutil.which("qemu-system-x86_64"), shutil.which("qemu-system-aarch64")) if p]
    for name in ("10.0", "5.2"):
        for arch in ("x86_64", "aarch64"):
            path = find_qemu(name, arch)
            if path is not None:
                found.append(path)
    return found


def source_of(r: dict) -> str:
    """Where a migration's source came from (conformance/live/checked.py), in a few words."""
    d = r.get("details", {})
    if r["verdict"] == "skip":
        return "skipped"
    if d.get("state_load"):
        return "a state its own build did not load (a result of its own)"
    if "resumed" in d and not d["resumed"].get("after"):
        return "handed over: the boot stage's checked VM, paused, resumed (cont)"
    if "resume_failed" in d and "the boot stage's checked VM" in str(d["resume_failed"].get("why", "")):
        return "hand-over failed (error)"
    if "resumed" in d:
        return "resumed: the source kept after the key's migration before (cont)"
    if "restored" in d and "checks" in d["restored"]:
        return "restored from a checked state"
    if "restored" in d:
        return "restore failed (error)"
    why = str(d.get("source_from", ""))
    if why.startswith("this run's boot stage"):
        return "not booted again: its boot stage's source never came up"
    if not why:
        return "own boot: a key used once (a pinned machine type)" if d.get("machine_from") == FROM_NEWEST \
            else "own boot: no checked state (single run, bisection)"
    if why.startswith("a boot of its own, kept"):
        return "own boot, kept for the key's next migrations (no state saved: not a failover guest)"
    why = why.removeprefix("a boot of its own: ")
    for words, label in (("not tried: known bug", "the save not tried (known bug: the primary is never released)"),
                         ("did not boot", "the checked source did not boot"), ("did not start", "QEMU did not start"),
                         ("failed its boot checks", "the checked source failed its checks"),
                         ("saving the checked guest ended", "the save did not complete (failover wait-unplug)"),
                         ("could not save", "the save failed"), ("did not load", "its build did not load the state"),
                         ("RAM", "the loaded state's RAM differs")):
        if words in why:
            return f"own boot: {label}"
    return f"own boot: {why[:60]}"


def profile(path: Path, jobs: int | None = None) -> list[str]:
    """Where the item seconds of a matrix run went: lines to print."""
    results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    catalogue = load_catalogue()

    def kind(case: str) -> str:
        try:
            found = catalogue.get(case)
        except Exception:
            return "?"
        return ("generic guest" if found.live.get("guest") == "generic" else "test guest") \
            + (", device-rich" if found.bisect else "")

    lines = []
    boots = Counter()
    boot_n = Counter()
    boot_wait = Counter()
    boot_cpu = Counter()
    for r in results:
        if r["stage"] != "boot" or r["verdict"] == "skip":
            continue
        key = f"{r['arch']} {r['qemu']['version']}, {kind(r['case'])}"
        boots[key] += r["duration_s"]
        boot_n[key] += 1
        boot_wait[key] += r["details"].get("boot_s", 0.0)
        boot_cpu[key] += r["details"].get("cpu_s", 0.0)
    total = sum(boots.values())
    lines.append(f"profile: boots {sum(boot_n.values())} items, {total:.0f} item s, {sum(boot_cpu.values()):.0f} "
                 "QEMU CPU s" + (f" (~{total / jobs:.0f} s wall at {jobs} jobs)" if jobs else ""))
    for key, seconds in boots.most_common():
        lines.append(f"  boot {key}: {boot_n[key]} in {seconds:.0f} s ({seconds / boot_n[key]:.1f} s each, "
                     f"{boot_cpu[key] / boot_n[key]:.1f} CPU s; to the boot report {boot_wait[key]:.0f} s)")
    hangs = [r for r in results if r["stage"] == "boot" and r["duration_s"] > 50]
    if hangs:
        lines.append(f"  of which boots over 50 s: {len(hangs)} in {sum(r['duration_s'] for r in hangs):.0f} s "
                     f"({', '.join(sorted({r['case'] + ' ' + r['qemu']['version'] for r in hangs}))})")
    states: dict[str, dict] = {}
    for r in results:
        restored = r.get("details", {}).get("restored")
        if isinstance(restored, dict) and "folder" in restored:
            states.setdefault(restored["folder"], restored)
    for origin in ("boot stage", "migration"):
        made = [s for s in states.values() if str(s.get("origin", "")).startswith(origin)]
        if made:
            first = sum(1 for s in made if "load_check" in s)  # loaded first by their one migration's restore
            lines.append(f"  checked states made by the {origin}: {len(made)}, saving "
                         f"{sum(s.get('save_s', 0) for s in made):.0f} s + load check "
                         f"{sum(s.get('verify_load_s', 0) for s in made):.0f} s (+ RAM compares)"
                         + (f"; {first} loaded first by the one migration that restores it" if first else ""))
    migs = [r for r in results if r["stage"] == "migrate"]
    by = Counter()
    by_n = Counter()
    phases: dict[str, Counter] = {}
    for r in migs:
        src = source_of(r)
        by[src] += r["duration_s"]
        by_n[src] += 1
        d = r.get("details", {})
        ph = phases.setdefault(src, Counter())
        restored = d.get("restored") if isinstance(d.get("restored"), dict) else {}
        ph["restore (load, first heartbeat, QMP checks)"] += restored.get("seconds", 0.0) if "resumed" not in d else 0
        ph["resume (cont, first heartbeat, QMP checks)"] += d.get("resumed", {}).get("seconds", 0.0)
        ph["of which the load"] += restored.get("load_s", 0.0) if "resumed" not in d else 0
        ph["the stream (total-time)"] += (d.get("stats", {}).get("total-time") or 0) / 1000
        ram = d.get("ram") if isinstance(d.get("ram"), dict) else {}
        ph["RAM check"] += ram.get("seconds", 0.0)
        cpu = d.get("cpu_s") if isinstance(d.get("cpu_s"), dict) else {}
        ph["QEMU CPU source"] += cpu.get("source", 0.0)
        ph["QEMU CPU destination"] += cpu.get("destination", 0.0)
    total = sum(by.values())
    lines.append(f"profile: migrations {len(migs)} items, {total:.0f} item s"
                 + (f" (~{total / jobs:.0f} s wall at {jobs} jobs)" if jobs else ""))
    for src, seconds in by.most_common():
        if not by_n[src]:
            continue
        parts = ", ".join(f"{name} {v:.0f} s" for name, v in phases[src].items() if v >= 0.5)
        lines.append(f"  {src}: {by_n[src]} in {seconds:.0f} s ({seconds / by_n[src]:.1f} s each)"
                     + (f"; {parts}" if parts else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="live jobs at a time (default: the runner's, the cores + 2)")
    parser.add_argument("-o", "--output", type=Path, help="keep the results here (default: a temporary folder)")
    parser.add_argument("--qemu", action="append", type=Path, help="these binaries instead (repeatable)")
    parser.add_argument("--cases", nargs="+", default=[], metavar="GLOB", help="only these cases (default: all)")
    parser.add_argument("--profile", type=Path, metavar="RESULTS", help="only print the profile of this run's "
                        "results.jsonl")
    args = parser.parse_args()
    if args.profile:
        print("\n".join(profile(args.profile, args.jobs)))
        return
    binaries = args.qemu or builds()
    out = args.output or Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    started = time.monotonic()
    run_stages(["boot", "migrate"], binaries, args.cases, out, lambda text: print(text, flush=True), jobs=args.jobs)
    took = time.monotonic() - started
    cpu = os.times()
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    print("\n".join(profile(out / "results.jsonl", args.jobs or os.cpu_count())))
    by_stage = Counter(r["stage"] for r in results)
    verdicts = Counter(r["verdict"] for r in results)
    if args.output is None:
        shutil.rmtree(out, ignore_errors=True)
    print(f"builds: {len(binaries)}; verdicts: {', '.join(f'{v} {n}' for v, n in sorted(verdicts.items()))}")
    print(f"matrix: {by_stage['boot']} boots + {by_stage['migrate']} migrations in {took / 60:.1f} min, "
          f"{cpu.children_user + cpu.children_system + cpu.user + cpu.system:.0f} CPU s, load "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end "
          f"({len(binaries)} builds, {os.cpu_count()} cores"
          + (f", cases {' '.join(args.cases)}" if args.cases else "") + ")")


if __name__ == "__main__":
    main()
