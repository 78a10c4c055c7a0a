"""The static migration prediction over every ordered pair of the prepared builds, every shared machine type
and every case (issue 17): cold (an empty vmstate cache) and from the cache. Prints both figures, wall and
CPU seconds (this process and its QEMUs: other work shares the cores) and the load average, as its last line.

    python benchmarks/sweep.py [--cached-only] [--keep DIR]
    python benchmarks/sweep.py --compare OLD NEW   (two --keep folders, or two results.jsonl)


The cold run gets a vmstate cache of its own (a temporary $QEMU_CONFORMANCE_CACHE whose other folders, the
builds and the probes, are the real ones), so the benchmark never empties the cache other runs use; the
cached run reads what the cold run wrote. ``--cached-only`` measures the real cache as it is. Each figure
counts the QEMUs started (paused probes; ``-device help`` and ``-dump-vmstate`` runs apart) and names the
builds that started most. ``--keep DIR`` keeps the cold run's results.jsonl (the cached run's as
cached.jsonl, the cold run's property cache as props/); ``--compare`` compares two such folders item by
item (each prediction by case, source, destination, machine type: verdict, per-device verdicts,
conditional notes, reason; each device reading by build, machine type and device type: its compared
values) and exits 1 when anything differs: the proof that a speed change left the prediction set as it
was.

``--live plan|all|classes|differences``: the live sweep instead (issue 17: the device-rich cases, boot and
migrate, over 5.2/7.2/10.0 x86_64 and 7.2/10.0 aarch64): ``plan`` prints, for each way of choosing machine
types, the migrations and the distinct source states (case, build, machine type) it needs, with no QEMU
booted; the others run ``run --stages boot,migrate --machines MODE`` and print wall and CPU seconds, the
verdicts and the load (docs/machines.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conformance.coverage import default_binaries
from conformance.machines import MachineChoice
from conformance.paths import cache_dir
from conformance.qemu.process import QemuProcess
from conformance.runner import run_stages


@contextmanager
def counting_qemus() -> Iterator[Counter[tuple[str, str]]]:
    """Counts the QEMUs started meanwhile, per (binary, -M machine type): the benchmark's own instrument."""
    counts: Counter[tuple[str, str]] = Counter()
    start = QemuProcess.start

    def counted(self: QemuProcess) -> QemuProcess:
        args = self.args
        machine = args[args.index("-M") + 1] if "-M" in args[:-1] else "?"
        counts[self.binary, machine] += 1
        return start(self)

    QemuProcess.start = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        QemuProcess.start = start  # type: ignore[method-assign]


def sweep(binaries: list[Path], keep: Path | None = None) -> tuple[float, float, str, Counter[tuple[str, str]]]:
    """(wall s, CPU s of this process and its QEMUs, the stage's own line: predictions and seconds and the
    QEMUs' share of the CPU, the QEMUs started per (binary, machine type)). ``keep``: where the run's
    results.jsonl is copied to."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sweep-") as out, counting_qemus() as qemus:
        cpu, qemu_cpu = _cpu(), _cpu(children_only=True)
        started = time.monotonic()
        run_stages(["vmstate"], binaries, [], Path(out), lines.append, machines=MachineChoice.parse("all"))
        wall = time.monotonic() - started
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(out) / "results.jsonl", keep)
    stage = next((line.strip() for line in lines if line.strip().startswith("vmstate:")), "")
    return wall, _cpu() - cpu, f"{stage}; QEMUs' CPU {_cpu(children_only=True) - qemu_cpu:.1f} s", qemus


def _cpu(*, children_only: bool = False) -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    qemus = children.ru_utime + children.ru_stime
    return qemus if children_only else own.ru_utime + own.ru_stime + qemus


def own_vmstate_cache(folder: Path) -> None:
    """Point $QEMU_CONFORMANCE_CACHE at ``folder``: links to every folder of the real cache but vmstate/."""
    real = cache_dir()
    for entry in real.iterdir() if real.is_dir() else []:
        if entry.name != "vmstate":
            (folder / entry.name).symlink_to(entry)
    os.environ["QEMU_CONFORMANCE_CACHE"] = str(folder)
    os.environ.setdefault("QEMU_CONFORMANCE_BUILDS", str(real / "builds"))


def _qemus(counts: Counter[tuple[str, str]]) -> str:
    """'N QEMUs' and the binaries that started most."""
    per_binary: Counter[str] = Counter()
    for (binary, _), n in counts.items():
        per_binary[binary] += n
    top = ", ".join(f"{_short(b)} {n}" for b, n in per_binary.most_common(6))
    newest: dict[tuple[str, str], tuple[tuple[int, ...], str]] = {}  # (binary, family) -> its newest type read
    for binary, machine in counts:
        found = re.fullmatch(r"(.+?)-(\d+(?:\.\d+)*)", machine)
        if found:
            version = tuple(int(x) for x in found.group(2).split("."))
            newest[binary, found.group(1)] = max(newest.get((binary, found.group(1)), ((), "")), (version, machine))
    learning = sum(counts[binary, machine] for (binary, _), (_, machine) in newest.items())
    return (f"{sum(counts.values())} QEMUs ({top}; {learning} under each family's newest type, where each build "
            "learns)") if counts else "0 QEMUs"


def _short(binary: str) -> str:
    parts = Path(binary).parts
    build = next((p for p in parts if re.fullmatch(r"qemu-[\d.]+", p)), "host")
    return f"{build}/{Path(binary).name.removeprefix('qemu-system-')}"


# --- the prediction set, item by item -------------------------------------------------------------------

def _items(path: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    """results.jsonl -> {(case, arch, source, destination, machine): what a prediction says} (vmstate only); a
    build is named by its folder (``qemu-10.0/x86_64``, ``host/x86_64``), so that runs whose builds live
    elsewhere (a private QEMU_CONFORMANCE_BUILDS) compare."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") != "vmstate":
            continue
        qemu, peer, details = record.get("qemu") or {}, record.get("peer") or {}, record.get("details") or {}
        key = (record["case"], record.get("arch", ""), f"{_short(str(qemu.get('path')))}@{qemu.get('version')}",
               f"{_short(str(peer.get('path')))}@{peer.get('version')}", str(details.get("machine", "")))
        out[key] = {"verdict": record["verdict"], "devices": details.get("devices"),
                    "conditional": details.get("conditional"), "explained": details.get("explained"),
                    "reason": record.get("reason", "")}
    return out


def compare(old: Path, new: Path, say: Any = print) -> int:
    """Item-by-item comparison of two prediction sets; prints the counts and the first differences; the
    number of items that differ (missing on one side included)."""
    a, b = _items(old), _items(new)
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    both = sorted(set(a) & set(b))
    differ = [k for k in both if a[k] != b[k]]
    fields: Counter[str] = Counter(f for k in differ for f in a[k] if a[k][f] != b[k][f])
    say(f"{len(a)} items in {old}, {len(b)} in {new}: {len(both) - len(differ)} equal, {len(differ)} differ "
        f"({', '.join(f'{f} {n}' for f, n in fields.most_common()) or 'none'}), {len(only_a)} only in the first, "
        f"{len(only_b)} only in the second; verdicts {dict(Counter(v['verdict'] for v in a.values()))} / "
        f"{dict(Counter(v['verdict'] for v in b.values()))}")
    for k in differ[:10]:
        say(f"  differs {k}:")
        for f in a[k]:
            if a[k][f] != b[k][f]:
                say(f"    {f}: {json.dumps(a[k][f])[:300]}\n      -> {json.dumps(b[k][f])[:300]}")
    for k in (only_a[:5] + only_b[:5]):
        say(f"  only in {'the first' if k in a else 'the second'}: {k}")
    return len(differ) + len(only_a) + len(only_b)


def _delta(x: Any, y: Any, where: str = "") -> str:
    """Where two JSON values differ: 'path: a -> b; ...'."""
    if isinstance(x, dict) and isinstance(y, dict):
        return "; ".join(d for k in sorted(set(x) | set(y)) if (d := _delta(x.get(k), y.get(k), f"{where}{k}.")))
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
        return "; ".join(d for i, (a, b) in enumerate(zip(x, y, strict=True)) if (d := _delta(a, b, f"{where}{i}.")))
    return "" if x == y else f"{where.rstrip('.')}: {json.dumps(x)[:80]} -> {json.dumps(y)[:80]}"


def compare_props(old: Path, new: Path, say: Any = print) -> int:
    """Every device's values in two kept property caches (``--keep``'s props/): per build, machine type and
    device type both read or took, the compared properties (conformance.vmstate.not_compared aside: the
    probe's own placement and names), its children's, an error's presence, and the machine's own devices.
    Prints the counts and the first differences; returns how many differ."""
    from conformance.vmstate import BACKEND_PLACEHOLDERS, not_compared

    chosen = {prop.split("=")[0] for _, prop, _ in BACKEND_PLACEHOLDERS}  # numbered by the device's batch place

    def shown(entry: dict[str, Any], plugged: Any) -> Any:
        """An entry as compared: an error, or its values and its own children's (a device of the batch that
        landed on its bus, such as a usb-storage under a usb-ehci, is the batch's doing)."""
        if "error" in entry:
            return "error"
        compared = lambda values: {k: v for k, v in values.items() if not not_compared(k) and k not in chosen}  # noqa: E731
        return compared(entry.get("props", {})), {c: compared(v) for c, v in entry.get("children", {}).items()
                                                  if c not in plugged}

    same = differ = taken = noise = 0
    shown_diffs: list[str] = []
    old_names, theirs = _build_names(old), {name: key for key, name in _build_names(new).items()}
    files = unpaired = 0
    for path in sorted(old.glob("*/*.json")):
        key = path.parent.name
        if old_names and theirs:  # both kept their builds' names: paired by name (keys follow the wrappers)
            key = theirs.get(old_names.get(key, ""), "")
        other = new / key / path.name
        if not key or not other.is_file():
            unpaired += 1
            continue
        files += 1
        a, b = json.loads(path.read_text()), json.loads(other.read_text())
        plugged = set(a["devices"]) | set(b["devices"])
        pairs = [(name, shown(entry, plugged), shown(b["devices"][name], plugged))
                 for name, entry in a["devices"].items() if name in b["devices"]]
        pairs.append(("(machine)", a["machine_devices"], b["machine_devices"]))
        for name, x, y in pairs:
            took = bool(b.get("machine_same_as")) if name == "(machine)" else "same_as" in b["devices"][name]
            taken += took
            if x == y:
                same += 1
                continue
            if not took:  # read by both runs: what the probe chose itself (a placeholder's chassis number)
                noise += 1
                continue
            differ += 1
            if len(shown_diffs) < 10:
                shown_diffs.append(f"  {path.parent.name[:8]} {path.stem} {name}: {_delta(x, y)[:400]}")
    say(f"property caches: {files} machine types of a build in both ({unpaired} only in the first); "
        f"{same} device readings equal, {differ} taken from a newer machine type differ from "
        f"what the old run read ({taken} taken in all), {noise} read by both runs differ (values the probe chose "
        "itself, such as a placeholder's chassis number: not the rule's doing)")
    for line in shown_diffs:
        say(line)
    return differ


BUILD_NAMES = "builds.json"  # in a kept props/ folder: cache key -> the build's name (_short)


def _build_names(props: Path) -> dict[str, str]:
    """A kept property cache's keys -> build names ({} for a folder kept before they were written)."""
    try:
        return dict(json.loads((props / BUILD_NAMES).read_text()))
    except (OSError, ValueError):
        return {}


def keep_props(cache: Path, binaries: list[Path], keep: Path) -> None:
    """The cold run's property cache into ``keep``/props, with the build each cache key is (a wrapper's key
    follows its text: builds of another folder or wrapper format have other keys, the same names)."""
    from conformance.coverage import binary_key

    shutil.copytree(cache / "vmstate" / "props", keep / "props", dirs_exist_ok=True)
    names = {binary_key(b): _short(str(b)) for b in binaries}
    (keep / "props" / BUILD_NAMES).write_text(json.dumps(names, indent=1, sort_keys=True) + "\n")


LIVE_CASES = ["*-rich", "pc-isa-vga", "*-newer-misc"]  # issue 17's device-rich cases
LIVE_SKIP = ("5.2.0", "aarch64")  # issue 17's live sweep: aarch64 on 7.2 and 10.0 only


def live_sweep(mode: str, binaries: list[Path], keep: Path | None = None) -> None:
    """The live sweep (``--live``): ``plan`` counts what each choice needs; a mode runs it."""
    from types import SimpleNamespace

    from conformance.caps.probe import probe_binary
    from conformance.cases import load_catalogue
    from conformance.machine_classes import ClassPlanner
    from conformance.plan import plan
    from conformance.runner import live_machines, target_names

    catalogue = load_catalogue()
    probed = [(b, probe_binary(b)) for b in binaries]
    chosen = [b for b, caps in probed if (str(caps.version), caps.arch) != LIVE_SKIP]
    if mode == "plan":
        targets = [SimpleNamespace(binary=b, caps=caps) for b, caps in probed if b in chosen]
        cases = catalogue.select(LIVE_CASES)
        for name in ("all", "classes", "differences"):
            started = time.monotonic()
            machines = (live_machines(MachineChoice.parse(name)) if name == "all"
                        else ClassPlanner(targets, catalogue, name).machines)
            items = [p for p in plan(cases, targets, ["migrate"], target_names, machines=machines)
                     if all(p.build.caps.has(f) and p.peer.caps.has(f) for f in p.case.needs)]
            states = {(p.case.name, p.build.caps.label, p.item.machine) for p in items}
            same = sum(p.build is p.peer for p in items)
            print(f"{name:12} {len(items):5} migrations ({same} same-build), {len(states):5} source states "
                  f"({time.monotonic() - started:.1f} s to plan)")
        return
    out = keep or Path(tempfile.mkdtemp(prefix="sweep-live-"))
    lines: list[str] = []
    cpu, started = _cpu(), time.monotonic()
    run_stages(["boot", "migrate"], chosen, LIVE_CASES, out, lambda line: (lines.append(line), print(line)),
               machines=MachineChoice.parse(mode))
    wall, cpu = time.monotonic() - started, _cpu() - cpu
    stages = "; ".join(line.strip() for line in lines if line.strip().startswith(("boot:", "migrate:", "live plan")))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"live sweep, --machines {mode}, {len(chosen)} builds: {wall:.1f} s wall, {cpu:.1f} s CPU; {stages}; "
          f"load average {load} on {os.cpu_count()} cores; results {out / 'results.jsonl'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached-only", action="store_true", help="measure the real vmstate cache (no cold run)")
    parser.add_argument("--keep", type=Path, help="keep the results: DIR/results.jsonl (cold), DIR/cached.jsonl, "
                        "DIR/props/ (the cold run's property cache)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"),
                        help="compare two --keep folders (or results.jsonl files) item by item; exit 1 on a difference")
    parser.add_argument("--live", choices=["plan", "all", "classes", "differences"], help="the live sweep instead")
    args = parser.parse_args()
    if args.live:
        return live_sweep(args.live, default_binaries(), args.keep)
    if args.compare:
        old, new = args.compare
        if old.is_dir():  # two --keep folders: the prediction sets and the property caches
            bad = compare(old / "results.jsonl", new / "results.jsonl") + compare_props(old / "props", new / "props")
        else:
            bad = compare(old, new)
        sys.exit(1 if bad else 0)
    binaries = default_binaries()
    parts = []
    with tempfile.TemporaryDirectory(prefix="sweep-cache-") as cache:
        if not args.cached_only:
            own_vmstate_cache(Path(cache))
            wall, cpu, stage, qemus = sweep(binaries, args.keep / "results.jsonl" if args.keep else None)
            if args.keep:  # what each build said under each machine type, for a rule's check
                keep_props(Path(cache), binaries, args.keep)
            print(f"cold:   {wall:.1f} s wall, {cpu:.1f} s CPU, {_qemus(qemus)}; {stage}")
            parts.append(f"cold {wall:.1f} s ({cpu:.1f} s CPU, {sum(qemus.values())} QEMUs)")
        wall, cpu, stage, qemus = sweep(binaries, args.keep / "cached.jsonl" if args.keep else None)
        print(f"cached: {wall:.1f} s wall, {cpu:.1f} s CPU, {_qemus(qemus)}; {stage}")
        parts.append(f"cached {wall:.1f} s ({cpu:.1f} s CPU)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"static prediction, {len(binaries)} builds, --machines all (probe of each build and report included): "
          f"{', '.join(parts)}; load average {load} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
