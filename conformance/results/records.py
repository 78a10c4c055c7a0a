"""Stage results: one record per (case, QEMU build, stage), written as JSON lines.

Every record carries its verdict and why, so a report never has to guess:
one of the verdict table's (conformance/results/verdicts.py).

The format of ``results.jsonl`` (read back by ``report`` and ``bugs explain``), one JSON object a line
with the fields of :class:`StageResult`: ``case``, ``stage``, ``verdict``, ``reason`` (one line; the whole
text in ``details.full_reason``), ``arch``, ``qemu`` and, for a migration, ``peer`` (the destination; each
``{path, version, package, arch}``), ``accel``, ``duration_s``, ``artifacts`` (name -> path relative to the
file's folder: ``argv`` the static argv, ``cmdline`` the one QEMU ran, ``stderr``, ``console``, ``qmp``;
a migration prefixes them with ``source-`` / ``destination-``) and ``details``. Known bugs in ``details``:
``known_bug`` (the bug record that explains a failure, with ``also``: the other bugs that explain it too),
``not_reproduced`` (bugs a passed run should have shown), ``known_bugs`` (static flags by configuration);
``signal`` (boot) or ``exits`` (migrate, per side) say how QEMU ended, and ``available`` lists the hardware
or features the host had for bugs that ``need`` them (none on this suite's hosts today).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from conformance.results.verdicts import VERDICTS, verdict

__all__ = ["VERDICTS", "QemuBuild", "ResultWriter", "StageResult", "one_line", "read_results"]

REASON_LIMIT = 300  # characters: a reason is one readable line; the whole text stays in details


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """``text`` on one line (white space folded), cut at ``limit`` with a pointer to the rest."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[:limit - 40].rstrip() + " ... (full text: details.full_reason)"


@dataclass
class QemuBuild:
    """The QEMU a result was obtained with."""

    path: str
    version: str = ""
    package: str = ""
    arch: str = ""
    package_version: str = ""  # the distribution package's version (dpkg's; known bugs' fixed_in_packages)

    @property
    def label(self) -> str:
        return f"{self.version or '?'} {self.arch}".strip()


@dataclass
class StageResult:
    case: str
    stage: str  # probe | caps | parse | argv | boot | migrate
    verdict: str
    reason: str = ""
    arch: str = ""
    qemu: QemuBuild | None = None  # the build under test; for migrate, the source
    peer: QemuBuild | None = None  # migrate: the destination build
    accel: str = ""
    duration_s: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the output folder
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        verdict(self.verdict)  # raises ValueError for a name that is not a verdict

    def to_json(self) -> str:
        short = one_line(self.reason)
        if short != self.reason and "full_reason" not in self.details:
            self.details["full_reason"] = self.reason
        self.reason = short
        # the fields as they are, no deep copy (asdict copied every details dict: a third of a cached
        # vmstate run's own time); a dataclass anywhere inside is encoded as asdict would have
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["duration_s"] = round(self.duration_s, 3)
        return json.dumps(data, sort_keys=True, default=_dataclass_json)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        data = dict(data)
        for key in ("qemu", "peer"):
            if data.get(key):
                data[key] = QemuBuild(**data[key])
        return cls(**data)


def _dataclass_json(value: Any) -> Any:
    """json.dumps ``default``: a dataclass (QemuBuild, or one a stage left in details) as its fields, one level
    (json.dumps comes back here for a dataclass inside one; asdict's deep copy cost 0.8 s per 13,448 results)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ResultWriter:
    """Appends records to DIR/results.jsonl; one write per line, safe across processes (O_APPEND)."""

    def __init__(self, output: str | Path, name: str = "results.jsonl") -> None:
        self.path = Path(output) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, result: StageResult) -> None:
        line = (result.to_json() + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_results(path: str | Path) -> Iterator[StageResult]:
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield StageResult.from_dict(json.loads(line))
