"""Bisection: which of a failing device-rich case's devices make it fail.

A case marked ``bisect = true`` in templates/cases.toml holds many devices; when its boot or migration
fails (verdict ``fail``: not skip, known-bug, error or interrupted), the same stage is run again on the
same build(s) with subsets of its devices, and the smallest set that still fails is named in the result:
``details.bisect = {"culprits": [...], "runs": N, "tried": [...]}`` and ``"...; bisect: fails with X
alone (N runs)"`` at the end of the reason.

- **Units** are the case's ``-device`` entries, read from the static argv the failed run recorded
  (``argv.json``; the live argv has the same devices). Kept in every run, and not a unit: the device the
  guest's console is on (the first serial port's chardev). The guest boots from ``-kernel``/``-initrd``,
  so no disk is needed.
- **Dependencies** travel with a device (a PCI port or bridge that carries devices is no unit of its
  own: it comes with them): a property whose value is another device's id, or its id plus
  ``.N`` (``bus=pci.1``, ``bus=scsi0.0``, ``masterbus=usb.0``, ``failover_pair_id=``), keeps that device
  in the run; so does function 0 of the PCI slot a function N>0 is on (a guest scans a slot's other
  functions only when function 0 is there). A run is the closure of its units; two unit sets with one closure run once.
- **Search**: the empty set first (a failure that needs none of the devices names none), then delta
  debugging (Zeller's ddmin: halves, then finer chunks and their complements) down to a set from which
  no chunk can be removed. A run "still fails" when its verdict is ``fail`` the same way: the first
  clause of its reason, numbers aside, is the original's (``signature``); a subset that fails otherwise
  (a different check) is recorded in ``tried`` but does not count.
- **Bounds**: at most ``MAX_RUNS`` runs and ``MAX_SECONDS`` of wall clock per failed result; when a bound
  is hit the smallest failing set so far is named, marked ``"complete": false``.
- The subset is applied where every live stage prepares its VM (conformance/live/boot.py ``prepare_vm``,
  ``keep_devices``): the other ``-device`` entries are left out of the live argv, their backends stay
  (an unused -netdev or -blockdev is harmless). Each run has its own folder under
  ``OUTPUT/bisect/CASE/STAGE-ITEM/run-N``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance import interrupt
from conformance.argv.options import devices, options, parse_props
from conformance.results.records import StageResult

if TYPE_CHECKING:
    from conformance.cases import Case
    from conformance.live.adapt import LiveArgv

MAX_RUNS = 10  # re-runs per failed result (one culprit among 30 devices: 6-8)
MAX_SECONDS = 480.0  # wall clock per failed result
SERIAL_DEVICES = ("isa-serial", "pci-serial", "spapr-vty")

#: (case, build, peer, machine, output folder) -> the stage's result: what the runner's stage functions take
StageRun = Callable[["Case", Any, Any, str, Path], StageResult]


@dataclass(frozen=True)
class Device:
    key: str  # its id, or DRIVER#N (the Nth -device) when it has none
    driver: str
    needs: frozenset[str]  # keys of the devices it refers to


def device_key(props: dict[str, Any], index: int) -> str:
    return str(props["id"]) if props.get("id") else f"{props.get('driver', '?')}#{index}"


def device_graph(argv: Sequence[str]) -> list[Device]:
    """The argv's -device entries with the devices each refers to (a property naming another's id or bus)."""
    devs = devices(list(argv))
    keys = [device_key(d, i) for i, d in enumerate(devs)]
    ids = {str(d["id"]) for d in devs if d.get("id")}
    graph = []
    for props, key in zip(devs, keys, strict=True):
        needs = set()
        for name, value in props.items():
            if name in ("id", "driver") or not isinstance(value, str):
                continue
            if value in ids:
                needs.add(value)
            else:
                parent = re.fullmatch(r"(.+)\.\d+", value)
                if parent and parent.group(1) in ids:
                    needs.add(parent.group(1))
        slot = _slot(props)
        if slot is not None and slot[2] != 0:  # function N>0 is only scanned when function 0 of its slot is there
            needs |= {k for d, k in zip(devs, keys, strict=True) if _slot(d) == (slot[0], slot[1], 0)}
        graph.append(Device(key, str(props.get("driver", "?")), frozenset(needs - {key})))
    return graph


def _slot(props: dict[str, Any]) -> tuple[str, int, int] | None:
    """(bus, slot, function) of a device with an explicit PCI address ``addr=0xS[.0xF]``."""
    match = re.fullmatch(r"(0x[0-9a-f]+|\d+)(?:\.(0x[0-9a-f]+|\d+))?", str(props.get("addr", "")), re.I)
    if not match or not props.get("bus"):
        return None
    return str(props["bus"]), int(match.group(1), 0), int(match.group(2) or "0", 0)


def signature(reason: str) -> str:
    """What kind of failure a reason says, for 'still fails the same way', numbers out: for a QEMU that did
    not start, its whole first line (QEMU's message names the option it refused); else the first clause
    ('source failed its boot checks', 'scsi disks'; up to a ':' or ';'), two when the first is one word
    ('source: ...')."""
    if "did not start" in reason:
        return re.sub(r"\d+", "N", reason.splitlines()[0] if reason else "")
    clauses = [c.strip() for c in re.split(r"[:;]", reason)]
    head = ": ".join(clauses[:2]) if len(clauses) > 1 and " " not in clauses[0] else clauses[0]
    return re.sub(r"\d+", "N", head)


def console_chardev(argv: Sequence[str]) -> str | None:
    """The chardev of the first serial port (the guest's console, conformance/live/adapt.py's rule)."""
    for _, opt, value in options(list(argv)):
        if opt == "-serial" and value and value.startswith("chardev:"):
            return value.split(":", 1)[1]
        if opt == "-device" and value:
            props = parse_props(value)
            if props.get("driver") in SERIAL_DEVICES and props.get("chardev"):
                return str(props["chardev"])
    return None


def pinned(argv: Sequence[str]) -> set[str]:
    """The devices every run keeps: the one the console is on."""
    chardev = console_chardev(argv)
    return {device_key(d, i) for i, d in enumerate(devices(list(argv)))
            if chardev and d.get("chardev") == chardev and d.get("driver") in SERIAL_DEVICES}


def closure(keys: set[str] | frozenset[str], graph: Sequence[Device]) -> frozenset[str]:
    by_key = {d.key: d for d in graph}
    found: set[str] = set()
    todo = list(keys)
    while todo:
        key = todo.pop()
        if key in found or key not in by_key:
            continue
        found.add(key)
        todo += by_key[key].needs
    return frozenset(found)


def keep_devices(live: LiveArgv, keep: frozenset[str]) -> LiveArgv:
    """The live argv with only the ``-device`` entries whose key is in ``keep`` (a bisection run)."""
    argv, dropped, index = [live.argv[0]], [], 0
    for _, opt, value in options(live.argv):
        if opt == "-device" and value:
            key = device_key(parse_props(value), index)
            index += 1
            if key not in keep:
                dropped.append(key)
                continue
        argv += [opt] if value is None else [opt, value]
    changes = [*live.changes, f"bisect: left out {len(dropped)} devices ({', '.join(dropped)})"] if dropped \
        else live.changes
    return dataclasses.replace(live, argv=argv, changes=changes)


def ddmin(units: Sequence[str], fails: Callable[[tuple[str, ...]], bool | None]) -> tuple[tuple[str, ...], bool]:
    """Zeller's ddmin over ``units`` (which fail together): the smallest failing set it reaches, and
    whether it finished (``fails`` returns None once the budget is spent)."""
    current = tuple(units)
    n = 2
    while len(current) >= 2:
        size = len(current)
        chunks = [current[i * size // n:(i + 1) * size // n] for i in range(n)]
        candidates = [*chunks, *([] if n == 2 else [tuple(u for u in current if u not in c) for c in chunks])]
        for candidate, is_chunk in zip(candidates, [True] * len(chunks) + [False] * (len(candidates) - n),
                                       strict=True):
            verdict = fails(candidate)
            if verdict is None:
                return current, False
            if verdict:
                current, n = candidate, 2 if is_chunk else max(n - 1, 2)
                break
        else:
            if n >= size:
                break
            n = min(size, 2 * n)
    return current, True


@dataclass
class Bisection:
    """One failed result's bisection: the runs it made and what it found."""

    graph: list[Device]
    keep: set[str]
    run_stage: Callable[[frozenset[str], Path], StageResult]
    folder: Path
    failure: str  # the signature of the failure being bisected: a run fails when it fails the same way
    max_runs: int = MAX_RUNS
    max_seconds: float = MAX_SECONDS

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.tried: list[dict[str, Any]] = []
        self.seen: dict[frozenset[str], bool] = {}
        self.stopped = ""

    def fails(self, units: tuple[str, ...]) -> bool | None:
        effective = closure(set(units) | self.keep, self.graph)
        if effective in self.seen:
            return self.seen[effective]
        if len(self.tried) >= self.max_runs:
            self.stopped = f"the {self.max_runs}-run bound"
            return None
        if time.monotonic() - self.started > self.max_seconds:
            self.stopped = f"the {self.max_seconds:g} s bound"
            return None
        if interrupt.STOP.is_set():
            self.stopped = "the run was interrupted"
            return None
        started = time.monotonic()
        result = self.run_stage(effective, self.folder / f"run-{len(self.tried) + 1}")
        failed = result.verdict == "fail" and signature(result.reason) == self.failure
        self.seen[effective] = failed
        self.tried.append({"devices": sorted(units), "with": sorted(effective - set(units) - self.keep),
                           "verdict": result.verdict, "reason": result.reason[:300],
                           "seconds": round(time.monotonic() - started, 1)})
        return failed

    def run(self) -> dict[str, Any]:
        carriers = {k for d in self.graph for k in d.needs}
        units = [d.key for d in self.graph  # a port or bridge with devices on it comes with them, not alone
                 if d.key not in self.keep and not (_plumbing(d.driver) and d.key in carriers)]
        record: dict[str, Any] = {"units": len(units), "culprits": [], "culprit_ids": [], "complete": True}
        empty = self.fails(())
        if empty is None:
            record["complete"] = False
        elif empty:
            record["finding"] = "fails without any of its devices"
        elif units:
            found, complete = ddmin(units, self.fails) if len(units) > 1 else ((units[0],), True)
            by_key = {d.key: d for d in self.graph}
            record.update(culprit_ids=list(found), culprits=[by_key[k].driver for k in found], complete=complete)
            needed = sorted(closure(set(found), self.graph) - set(found) - self.keep)
            if needed:  # what the culprits sit on: named in the reason unless it is PCI plumbing
                record["with"] = [f"{by_key[k].driver} ({k})" for k in needed]
                record["on"] = [f"{by_key[k].driver} {k}" for k in needed if not _plumbing(by_key[k].driver)]
        record.update(runs=len(self.tried), tried=self.tried, seconds=round(time.monotonic() - self.started, 1))
        if self.stopped:
            record["stopped_by"] = self.stopped
        return record


def summary(record: dict[str, Any]) -> str:
    """The reason's tail: 'bisect: fails with virtio-gpu-pci alone (6 runs)'."""
    runs = f"{record['runs']} run{'s' if record['runs'] != 1 else ''}"
    if record.get("finding"):
        return f"bisect: {record['finding']} ({runs})"
    culprits = record["culprits"]
    if not culprits:
        return f"bisect: not run ({record.get('stopped_by', 'no devices')})"
    names = ", ".join(f"{driver} {key}" for driver, key in zip(culprits, record["culprit_ids"], strict=True))
    on = f" (on {', '.join(record['on'])})" if record.get("on") else ""
    what = f"{names}{on} alone" if len(culprits) == 1 else f"{names}{on}"
    if record["complete"] and len(culprits) == record["units"] and len(culprits) > 1:
        return f"bisect: fails only with all {len(culprits)} devices together ({runs})"
    tail = "" if record["complete"] else f"; smallest found before {record.get('stopped_by')}"
    return f"bisect: fails with {what} ({runs}{tail})"


def _plumbing(driver: str) -> bool:
    """A PCI port or bridge: what a device sits on, not worth naming beside it."""
    return any(word in driver for word in ("root-port", "bridge", "upstream", "downstream", "ioh3420"))


def should_bisect(case: Case, result: StageResult) -> bool:
    return bool(getattr(case, "bisect", False)) and result.verdict == "fail" and not interrupt.STOP.is_set()


def _recorded_argv(result: StageResult, output: Path) -> list[str] | None:
    import json

    for key in ("argv", "source-argv"):
        path = result.artifacts.get(key)
        if path and (output / path).is_file():
            return list(json.loads((output / path).read_text()))
    return None


def bisect_result(case: Case, result: StageResult, run: StageRun, build: Any, peer: Any, machine: str,
                  output: Path, *, max_runs: int = MAX_RUNS, max_seconds: float = MAX_SECONDS) -> StageResult:
    """Bisect a failed result of a device-rich case; the result with ``details.bisect`` and the reason's tail."""
    argv = _recorded_argv(result, output)
    if argv is None:
        result.details["bisect"] = {"culprits": [], "runs": 0, "tried": [], "stopped_by": "no recorded argv"}
        return result
    tag = hashlib.sha1(f"{getattr(build, 'binary', '')}|{getattr(peer, 'binary', '')}|{machine}".encode()
                       ).hexdigest()[:8]
    folder = output / "bisect" / case.name / f"{result.stage}-{tag}"

    def run_stage(keep: frozenset[str], where: Path) -> StageResult:
        return run(dataclasses.replace(case, devices_only=keep), build, peer, machine, where)

    record = Bisection(device_graph(argv), pinned(argv), run_stage, folder, signature(result.reason), max_runs,
                       max_seconds).run()
    record["folder"] = str(folder.relative_to(output))
    result.details["bisect"] = record
    result.reason = f"{result.reason}; {summary(record)}"
    return result


def bisecting(run: StageRun, output: Path) -> Callable[[Case, Any, Any, str], StageResult]:
    """A live stage's item function that bisects the failures of device-rich cases."""
    def run_item(case: Case, build: Any, peer: Any, machine: str) -> StageResult:
        result = run(case, build, peer, machine, output)
        if should_bisect(case, result):
            result = bisect_result(case, result, run, build, peer, machine, output)
        return result

    return run_item
