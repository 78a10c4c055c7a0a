"""Match a failing (or passing) stage result against the known-bugs database.

A failure explained by a bug that affects this QEMU version is a *known bug*;
a version-matching bug whose symptom did not show is *not reproduced* (fixed
or backported?); anything else is a plain failure (a regression candidate).

A bug also says which configurations it concerns (``concerns``, as data), so the static
stages can flag "this domain on this version meets that bug" from the built argv alone.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from conformance.argv.options import devices, options
from conformance.caps.model import QemuVersion
from conformance.errors import CaseError

BUGS_FILE = Path(__file__).with_name("bugs.toml")


@dataclass(frozen=True)
class KnownBug:
    id: str
    title: str
    first: QemuVersion
    last: QemuVersion
    fixed: str
    stages: tuple[str, ...]
    signals: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    needs: tuple[str, ...]
    side: str = ""  # migrate: "source" or "destination" when the bug shows on one side only
    peer: tuple[QemuVersion, QemuVersion] | None = None  # migrate: the other side's versions it needs
    concerns: Concerns | None = None  # the configurations it concerns (static flags); None: not said
    reproduce: tuple[str, ...] = ()  # stages whose plain run (with ``concerns`` and ``needs``) shows it
    arches: tuple[str, ...] = ()  # only on these guest arches (empty: any)
    cross_version: bool = False  # migrate: only between two different QEMU versions
    accels: tuple[str, ...] = ()  # only under these accelerators (empty: any)

    def affects(self, version: QemuVersion, peer: QemuVersion | None = None, side: str = "", arch: str = "",
                accel: str = "") -> bool:
        """True for this version (on ``side`` of a migration with ``peer``, on ``arch``, under ``accel``,
        when given)."""
        if not self.first <= version <= self.last:
            return False
        if self.side and side and self.side != side:
            return False
        if self.arches and arch and arch not in self.arches:
            return False
        if self.accels and accel and accel not in self.accels:
            return False
        if self.cross_version and (peer is None or peer == version):
            return False
        return self.peer is None or (peer is not None and self.peer[0] <= peer <= self.peer[1])

    def record(self) -> dict[str, str]:
        """The bug as a result records it: enough for reports and JUnit to name it without the database."""
        return {"id": self.id, "title": self.title, "fixed": self.fixed, "affected": f"{self.first}..{self.last}",
                "concerns": self.concerns.says if self.concerns else ""}

    def explains(self, *, stage: str, signal: str | None, text: str) -> bool:
        if stage not in self.stages:
            return False
        if self.signals and signal not in self.signals:
            return False
        return not self.patterns or any(p.search(text) for p in self.patterns)


_TRUE = {"on", "true", "yes", "1"}


def _norm(value: object) -> str:
    text = str(value).lower()
    return "on" if text in _TRUE else "off" if text in {"off", "false", "no", "0"} else text


@dataclass(frozen=True)
class Concerns:
    """Which configurations a bug concerns, read from the built argv (never from case names):
    every pattern in ``devices`` must match some -device (a property given as "*" only has to be
    present), and ``machine`` (a regex) must match the -machine type when given."""

    devices: tuple[tuple[tuple[str, str], ...], ...] = ()
    machine: re.Pattern[str] | None = None
    says: str = ""  # the configuration in words, for reports

    @classmethod
    def from_toml(cls, raw: dict[str, Any]) -> Concerns:
        unknown = set(raw) - {"devices", "machine", "says"}
        if unknown:
            raise ValueError(f"concerns: unknown key(s) {', '.join(sorted(unknown))} (devices, machine, says)")
        pats = tuple(tuple(sorted((str(k), "*" if v == "*" else _norm(v)) for k, v in d.items()))
                     for d in raw.get("devices", ()))
        if not pats and "machine" not in raw:
            raise ValueError("concerns: give devices and/or machine")
        return cls(pats, re.compile(raw["machine"]) if "machine" in raw else None, str(raw.get("says", "")))

    def match(self, machine: str, devs: list[dict[str, str]]) -> bool:
        """``machine``: the -machine type; ``devs``: the -device dicts, values normalised (_norm)."""
        if self.machine is not None and not self.machine.search(machine):
            return False
        return all(any(all(k in d and (want == "*" or d[k] == want) for k, want in pattern) for d in devs)
                   for pattern in self.devices)


@lru_cache(maxsize=2)
def load_bugs(path: str = str(BUGS_FILE)) -> tuple[KnownBug, ...]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(f"malformed known-bugs file: {exc}", path=path) from None
    bugs = []
    for bug_id, raw in data.get("bugs", {}).items():
        try:
            first, last = (QemuVersion.parse(v) for v in raw["affected"])
            match = raw.get("match", {})
            bugs.append(KnownBug(
                id=bug_id, title=raw["title"], first=first, last=last, fixed=raw.get("fixed", ""),
                stages=tuple(raw.get("stages", ())), signals=tuple(match.get("signal", ())),
                patterns=tuple(re.compile(p) for p in match.get("text", ())), needs=tuple(raw.get("needs", ())),
                side=_side(raw.get("side", "")),
                peer=tuple(QemuVersion.parse(v) for v in raw["peer"]) if "peer" in raw else None,  # type: ignore[arg-type]
                concerns=Concerns.from_toml(raw["concerns"]) if "concerns" in raw else None,
                reproduce=tuple(raw.get("reproduce", ())),
                arches=tuple(raw.get("arches", ())), cross_version=bool(raw.get("cross_version", False)),
                accels=tuple(raw.get("accels", ())),
            ))
        except (KeyError, ValueError, re.error) as exc:
            raise CaseError(f"known bug {bug_id}: bad entry ({exc})", path=path) from None
    return tuple(bugs)


def _side(side: str) -> str:
    if side not in ("", "source", "destination"):
        raise ValueError(f"side must be 'source' or 'destination', not {side!r}")
    return side


def explain_failure(version: QemuVersion, stage: str, *, signal: str | None = None, text: str = "",
                    peer: QemuVersion | None = None, side: str = "", arch: str = "",
                    accel: str = "") -> KnownBug | None:
    """The known bug of this QEMU version (on ``side`` of a migration with ``peer``, on ``arch``, under
    ``accel``, when given) that explains a failure."""
    for bug in load_bugs():
        if bug.affects(version, peer, side, arch, accel) and bug.explains(stage=stage, signal=signal, text=text):
            return bug
    return None


def expected_bugs(version: QemuVersion, stage: str, argv: list[str], *,
                  available: set[str] | frozenset[str] = frozenset(), peer: QemuVersion | None = None,
                  side: str = "", arch: str = "") -> list[KnownBug]:
    """Bugs a plain run of ``stage`` with this argv reproduces on this version (``reproduce``), given
    the hardware/features available: when that run passes, each of them is *not reproduced*."""
    return [b for b in bugs_concerning(version, argv)
            if stage in b.reproduce and b.affects(version, peer, side, arch) and set(b.needs) <= set(available)]


def bugs_concerning(version: QemuVersion, argv: list[str]) -> list[KnownBug]:
    """Known bugs of this QEMU version whose configuration this argv has (the static flags)."""
    joined = "\n".join(argv)
    # cheap first: every property name (or driver) a pattern needs must appear somewhere in the argv
    candidates = [b for b in load_bugs() if b.concerns is not None and b.first <= version <= b.last
                  and all((v if k == "driver" else k) in joined for pattern in b.concerns.devices for k, v in pattern)]
    if not candidates:
        return []
    machine = next((v for _, opt, v in options(argv) if opt == "-machine" and v), "")
    machine = machine.split(",")[0].removeprefix("type=")
    devs = [{k: _norm(v) for k, v in d.items()} for d in devices(argv)]
    return [b for b in candidates if b.concerns is not None and b.concerns.match(machine, devs)]
