"""Write the HTML compatibility report: a matrix of cases x QEMU builds x stages.

Results from several runs (CI shards, machines) merge: later records of the
same (case, build, stage) replace earlier ones. Every cell links to its
artifacts (argv, logs, serial console, QMP transcript) relative to the report.
"""

from __future__ import annotations

import html
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from conformance.results.records import StageResult, read_results

STAGE_ORDER = ("probe", "caps", "parse", "argv", "boot", "migrate")


@dataclass
class Cell:
    results: list[StageResult] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        order = ("error", "fail", "known-bug", "not-reproduced", "pass", "skip")
        return min((r.verdict for r in self.results), key=order.index, default="")


def _build_key(r: StageResult) -> str:
    q = r.qemu
    if q is None:
        return r.arch or "?"
    label = f"QEMU {q.version or '?'} {q.arch or r.arch}".strip()
    return f"{label} ({q.package})" if q.package else f"{label} {q.path}".strip()


def merge(result_files: list[Path]) -> tuple[list[StageResult], dict[int, Path]]:
    """All records, deduplicated by (case, build, stage, fixture); remembers which file each came from."""
    latest: dict[tuple[str, str, str, str], tuple[StageResult, Path]] = {}
    for path in result_files:
        for r in read_results(path):
            latest[(r.case, _build_key(r), r.stage, str(r.details.get("fixture", "")))] = (r, path)
    records = [r for r, _ in latest.values()]
    origin = {id(r): p for r, p in latest.values()}
    return records, origin


def _artifact_links(r: StageResult, source: Path, report_dir: Path) -> list[tuple[str, str]]:
    links = []
    for name, rel in sorted(r.artifacts.items()):
        target = (source.parent / rel).resolve()
        links.append((name, os.path.relpath(target, report_dir.resolve())))
    return links


def write_report(result_files: list[Path], output: Path, title: str = "QEMU compatibility report") -> Path:
    records, origin = merge(result_files)
    output.mkdir(parents=True, exist_ok=True)
    builds = sorted({_build_key(r) for r in records})
    stages = [s for s in STAGE_ORDER if any(r.stage == s for r in records)]
    grid: dict[str, dict[str, dict[str, Cell]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(Cell)))
    for r in records:
        grid[r.case][_build_key(r)][r.stage].results.append(r)
    cases = sorted(grid, key=lambda c: (c not in ("probe", "caps-vs-stored", "caps-vs-previous"), c))
    totals = Counter(r.verdict for r in records)
    problems = [r for r in records if r.verdict in ("fail", "error", "known-bug")]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    page = env.get_template("report.html.j2").render(
        title=title, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), builds=builds, stages=stages,
        cases=cases, grid=grid, totals=totals, problems=problems, build_key=_build_key,
        links=lambda r: _artifact_links(r, origin[id(r)], output), sources=[str(p) for p in result_files],
        escape=html.escape,
    )
    target = output / "report.html"
    target.write_text(page)
    return target
