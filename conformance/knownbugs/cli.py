"""``qemu-conformance bugs``: the known-bugs database as a table, and earlier results re-matched against it.

``bugs explain RESULTS.jsonl...`` reads the records the suite writes (conformance/results/records.py), with
the argv and logs they link to (artifacts, relative to the results file's folder), and applies today's
database with the rule the live stages use (conformance/knownbugs/matcher.py): a re-triage after
``bugs.toml`` changed, and how a reviewer checks an entry against its evidence (tests/data/knownbugs/).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.caps.model import QemuVersion
from conformance.errors import CaseError
from conformance.knownbugs.matcher import (
    AVAILABLE_FEATURES,
    Applicability,
    Explanation,
    Facts,
    KnownBug,
    Purpose,
    each_hazard,
    load_bugs,
    match,
    ranked,
)
from conformance.results.records import StageResult

#: What the live explain step reads of a failed VM (boot.explain): its stderr tail and console tail.
STDERR_LINES = 20
CONSOLE_LINES = 10
EXPLAINED = ("fail", "known-bug")  # verdicts a known bug may explain (known-bug: it did once)


def add_arguments(parser: argparse.ArgumentParser, path_type: Callable[[str], Path]) -> None:
    """``bugs list`` and ``bugs explain`` under ``parser`` (the ``bugs`` sub-command)."""
    sub = parser.add_subparsers(dest="bugs_command", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="the known-bugs database as a table")
    p.add_argument("--version", help="only bugs affecting this QEMU version (e.g. 7.2.22)")
    p.add_argument("--arch", help="only bugs that can show on this guest arch (e.g. aarch64)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("explain", help="re-match every non-pass result of earlier runs against today's database")
    p.add_argument("results", nargs="+", type=path_type, help="results.jsonl files written by run or qualify")
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    p.set_defaults(func=cmd_explain)


# ------------------------------------------------------------------------------------------------ list

def cmd_list(args: argparse.Namespace) -> int:
    version = _version_arg(args.version) if args.version else None
    rows = [("ID", "AFFECTED", "STAGES", "ARCH", "ACCEL", "MIGRATION", "CONCERNS", "NEEDS", "FIXED")]
    for bug in load_bugs():
        if version is not None and not bug.first <= version <= bug.last:
            continue
        if args.arch and bug.arches and args.arch not in bug.arches:
            continue
        rows.append((bug.id, f"{bug.first}..{bug.last}", ",".join(bug.stages), ",".join(bug.arches) or "any",
                     ",".join(bug.accels) or "any", _migration(bug), _concerns(bug), ",".join(bug.needs) or "-",
                     bug.fixed))
    if len(rows) == 1:
        print("no known bug matches" + (f" QEMU {version}" if version else "") + (f" on {args.arch}" if args.arch
                                                                                  else ""))
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip())
    return 0


def _version_arg(text: str) -> QemuVersion:
    try:
        return QemuVersion.parse(text)
    except ValueError as exc:
        raise CaseError(f"--version: {exc}") from None


def _migration(bug: KnownBug) -> str:
    parts = [bug.side] if bug.side else []
    if bug.cross_version:
        parts.append("cross-version")
    if bug.peer:
        parts.append(f"peer {bug.peer[0]}..{bug.peer[1]}")
    return ", ".join(parts) or "-"


def _concerns(bug: KnownBug) -> str:
    if bug.concerns is None:
        return "any"
    machine = f"machine /{bug.concerns.machine.pattern}/" if bug.concerns.machine else ""
    return "; ".join(p for p in (bug.concerns.describe(), machine) if p)


# --------------------------------------------------------------------------------------------- explain

@dataclass
class Retriaged:
    """One earlier result against today's database."""

    result: StageResult
    bugs: list[Applicability] = field(default_factory=list)  # those that apply, primary first
    why: str = ""

    @property
    def bug(self) -> str | None:
        return self.bugs[0].bug.id if self.bugs else None

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"case": r.case, "stage": r.stage, "qemu": r.qemu.version if r.qemu else None,
                "peer": r.peer.version if r.peer else None, "bug": self.bug,
                "also": [a.bug.id for a in self.bugs[1:]], "why": self.why}

    def line(self) -> str:
        r = self.result
        where = (r.qemu.version if r.qemu else "?") + (f" -> {r.peer.version}" if r.peer else "")
        also = f" (+{','.join(a.bug.id for a in self.bugs[1:])})" if len(self.bugs) > 1 else ""
        return f"{(self.bug or '-') + also}  {r.case} {r.stage} {where} {r.arch} [{r.verdict}]: {self.why}"


def cmd_explain(args: argparse.Namespace) -> int:
    for path in args.results:
        for result in read_records(path):
            if result.verdict == "pass":
                continue
            found = retriage(result, path.parent)
            print(json.dumps(found.to_dict()) if args.json else found.line())
    return 0


def read_records(path: Path) -> Iterator[StageResult]:
    """The records of one results.jsonl; a bad line is one error naming the file and the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CaseError(f"cannot read the results: {exc.strerror}", path=str(path),
                        hint="give a results.jsonl written by run or qualify") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield StageResult.from_dict(json.loads(line))
        except (ValueError, TypeError) as exc:
            raise CaseError(f"not a stage result record ({exc})", path=str(path), line=number,
                            hint="each line is one JSON record (conformance/results/records.py)") from None


def retriage(result: StageResult, folder: Path) -> Retriaged:
    """Today's answer for one earlier result: the bugs that explain a failure (both sides of a migration,
    the source's first, as the live stage tries them), or that a not-reproduced pass should have shown."""
    out = Retriaged(result)
    if result.verdict not in (*EXPLAINED, "not-reproduced"):
        out.why = f"not matched: {result.verdict} is not a QEMU failure"
        return out
    purpose: Purpose = "expect" if result.verdict == "not-reproduced" else "explain"
    try:
        sides = [(side, Explanation(facts, match(facts, purpose))) for side, facts in facts_of(result, folder)]
    except ValueError as exc:
        out.why = f"not matched: {exc}"
        return out
    hazards = _hazards(result) if purpose == "explain" else {}
    if hazards:
        return _retriage_hazards(out, hazards, [(side, found.facts) for side, found in sides])
    for side, found in sides:
        holding = ranked(found.checked)
        if holding:
            out.bugs, out.why = holding, found.why(side)
            return out
    out.why = " | ".join(why for why in (found.why(side) for side, found in sides) if why)
    if not out.why:
        versions = ", ".join(sorted({str(found.facts.version) for _, found in sides}))
        out.why = f"no known bug of QEMU {versions} at stage {result.stage} " + (
            "shows this symptom" if purpose == "explain" else "is expected here")
    return out


def _hazards(result: StageResult) -> dict[str, str]:
    """A vmstate result's hazards, {device type: its reason}, when it names more than one device: the stage
    explains each on its own (conformance/vmstate.py, explain_hazards), and so does the re-match."""
    devices = result.details.get("devices") if result.stage == "vmstate" else None
    if not isinstance(devices, dict):
        return {}
    bad = {str(k): str(v) for k, v in devices.items() if v != "compatible"}
    if len(bad) < 2:
        return {}
    reason = _own_reason(result)  # the stage's order (a stored record's details have their keys sorted)
    at = {k: reason.find(f"{k}: {v}") for k, v in bad.items()}
    return {k: bad[k] for k in sorted(bad, key=lambda k: (at[k] < 0, at[k]))}


def _retriage_hazards(out: Retriaged, hazards: dict[str, str], sides: list[tuple[str, Facts]]) -> Retriaged:
    """Each device's hazard matched on its own, the source's facts first, as the vmstate stage does: the bugs
    only when every hazard is explained (primary first, then the others in the order they first explain a
    device), so that a bug explaining one device never hides another device's unexplained hazard."""
    whys: list[str] = []

    def attempt(device: str, hazard: str, on: tuple[str, Facts]) -> list[Applicability] | None:
        side, facts = on
        one = replace(facts, text=f"{device}: {hazard}")
        found = Explanation(one, match(one, "explain"))
        holding = ranked(found.checked)
        if holding:
            whys.append(f"{device}: {found.why(side)}")
        return holding or None

    found_by, left = each_hazard(hazards, sides, attempt)
    if left:
        out.why = (f"hazards of {', '.join(left)} explained by no known bug"
                   + (f"; explained: {', '.join(f'{d} ({a[0].bug.id})' for d, a in found_by.items())}"
                      if found_by else ""))
        return out
    bugs: dict[str, Applicability] = {}
    for holding in found_by.values():
        for a in holding:
            bugs.setdefault(a.bug.id, a)
    out.bugs = list(bugs.values())
    out.why = " || ".join(whys)
    return out


def facts_of(result: StageResult, folder: Path) -> Iterator[tuple[str, Facts]]:
    """(side, facts) of one record: one for a boot, the source then the destination for a migration.
    Raises ValueError when the record names no QEMU version."""
    if result.qemu is None or not result.qemu.version:
        raise ValueError("the record names no QEMU version")
    version = QemuVersion.parse(result.qemu.version)
    reason = _own_reason(result)
    if result.stage not in ("migrate", "vmstate") or result.peer is None or not result.peer.version:  # pairs
        yield "", _facts(result, folder, version, None, "", "", reason)
        return
    peer = QemuVersion.parse(result.peer.version)
    yield "source", _facts(result, folder, version, peer, "source", "source-", reason)
    yield "destination", _facts(result, folder, peer, version, "destination", "destination-", reason)


def _facts(result: StageResult, folder: Path, version: QemuVersion, peer: QemuVersion | None, side: str,
           prefix: str, reason: str) -> Facts:
    art, details = result.artifacts, result.details
    argv = _read_argv(folder, art.get(f"{prefix}cmdline") or art.get(f"{prefix}argv"))
    stderr = _tail(folder, art.get(f"{prefix}stderr"), STDERR_LINES) or str(details.get(f"{side}_stderr_tail", ""))
    console = _tail(folder, art.get(f"{prefix}console"), CONSOLE_LINES) or str(
        details.get(f"{side}_console_tail", ""))
    signal = details.get("signal") if not side else _signal((details.get("exits") or {}).get(side, ""))
    available = AVAILABLE_FEATURES | frozenset(str(f) for f in details.get("available") or ())
    build = result.peer if side == "destination" else result.qemu  # its package version: fixed_in_packages
    return Facts(version=version, stage=result.stage, arch=result.arch, accel=result.accel, side=side, peer=peer,
                 argv=argv, available=available, signal=signal or None,
                 text="\n".join(t for t in (reason, stderr, console) if t),
                 package=build.package_version if build is not None else "")


def _own_reason(result: StageResult) -> str:
    """The stage's own reason: the full text, without the 'known bug X (...): ' an earlier match put first."""
    reason = str(result.details.get("full_reason") or result.reason)
    bug = result.details.get("known_bug")
    if result.verdict == "known-bug" and isinstance(bug, dict):
        head = " ".join(f"known bug {bug.get('id')} ({bug.get('title')}; fixed: {bug.get('fixed')})".split())
        flat = " ".join(reason.split()) if not reason.startswith(head) else reason
        if flat.startswith(head):
            rest = flat[len(head):]
            rest = re.sub(r"^; also explained by [^:]*", "", rest)
            return rest.removeprefix(": ")
    return reason


def _signal(exit_text: str) -> str | None:
    found = re.search(r"killed by (SIG[A-Z0-9]+)(?! \(requested)", str(exit_text))
    return found[1] if found else None


def _read_argv(folder: Path, rel: str | None) -> tuple[str, ...] | None:
    if not rel:
        return None
    try:
        data = json.loads((folder / rel).read_text())
    except (OSError, ValueError):
        return None
    return tuple(str(a) for a in data) if isinstance(data, list) else None


def _tail(folder: Path, rel: str | None, lines: int) -> str:
    if not rel:
        return ""
    try:
        text = (folder / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
