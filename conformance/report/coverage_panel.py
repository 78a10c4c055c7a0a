"""The report's device-coverage panel: OUTPUT/coverage.json (``qualify`` writes it, conformance/coverage.py
computes it) beside each merged results file, one row per build and machine family."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.coverage import summary


@dataclass
class CoverageRow:
    build: str
    arch: str
    family: str
    binary: str
    offered: int
    covered: int
    not_coverable: dict[str, str]  # type -> reason
    uncovered: list[str]
    percent: float
    not_on_family: int
    unmigratable: int
    covered_by: dict[str, list[str]]  # migratable type -> cases
    not_walked: dict[str, str]  # a bootable case whose machine did not start paused -> why

    @property
    def level(self) -> str:
        """ok at the issue's goal (90%), else low."""
        return "ok" if self.percent >= 90.0 else "low"


def load_coverage(result_files: list[Path], output: Path) -> list[dict[str, Any]]:
    """Every coverage.json beside the results files (and in the report folder); a later one replaces an
    earlier one of the same build, arch, family and binary. Unreadable files are skipped."""
    found: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for folder in [*(p.parent for p in result_files), output]:
        path = folder / "coverage.json"
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and {"build", "arch", "family", "migratable", "covered"} <= set(row):
                found[(row["build"], row["arch"], row["family"], str(row.get("binary", "")))] = row
    return list(found.values())


def coverage_rows(results: list[dict[str, Any]]) -> list[CoverageRow]:
    rows = []
    for row in results:
        s = summary(row)
        offered = set(row["migratable"])
        rows.append(CoverageRow(
            row["build"], row["arch"], row["family"], str(row.get("binary", "")), s["offered"], s["covered"],
            {t: why for t, why in sorted(row.get("not_coverable", {}).items()) if t in offered},
            s["uncovered"], s["percent"], len(row.get("not_on_family", {})), len(row.get("unmigratable", {})),
            {t: cases for t, cases in sorted(row["covered"].items()) if t in offered},
            {c: why for c, why in sorted(row.get("cases_skipped", {}).items())
             if why.startswith("QEMU did not start")}))
    return rows
