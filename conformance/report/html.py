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

from conformance.results.junit import write_junit
from conformance.results.records import QemuBuild, StageResult, read_results

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


def _pair_key(r: StageResult) -> str:
    """``7.2.22 x86_64 -> 10.0.2 x86_64``: a migration's column."""
    def short(q: QemuBuild | None) -> str:
        return f"{q.version or '?'} {q.arch or r.arch}" if q else "?"

    return f"{short(r.qemu)} -> {short(r.peer)}"


def merge(result_files: list[Path]) -> tuple[list[StageResult], dict[int, Path]]:
    """All records, deduplicated by (case, build, peer build, stage, fixture); remembers which file each
    came from. A migration keys on its pair, so cross-build results never collapse into one."""
    latest: dict[tuple[str, str, str, str, str], tuple[StageResult, Path]] = {}
    for path in result_files:
        for r in read_results(path):
            peer = _build_key(StageResult(case="", stage="", verdict="pass", qemu=r.peer)) if r.peer else ""
            latest[(r.case, _build_key(r), peer, r.stage, str(r.details.get("fixture", "")))] = (r, path)
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
    """OUTPUT/report.html and, from the same merged results, OUTPUT/junit.xml; the page's path."""
    records, origin = merge(result_files)
    output.mkdir(parents=True, exist_ok=True)
    write_junit(records, output / "junit.xml")
    builds = sorted({_build_key(r) for r in records})
    stages = [s for s in STAGE_ORDER if s != "migrate" and any(r.stage == s for r in records)]
    grid: dict[str, dict[str, dict[str, Cell]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(Cell)))
    migrations: dict[str, dict[str, StageResult]] = defaultdict(dict)  # case -> pair -> result
    for r in records:
        if r.stage == "migrate":
            migrations[r.case][_pair_key(r)] = r
        else:
            grid[r.case][_build_key(r)][r.stage].results.append(r)
    pairs = sorted({pair for row in migrations.values() for pair in row})
    cases = sorted(grid, key=lambda c: (c not in ("probe", "caps-vs-stored", "caps-vs-previous"), c))
    totals = Counter(r.verdict for r in records)
    problems = [r for r in records if r.verdict in ("fail", "error", "known-bug")]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    page = env.get_template("report.html.j2").render(
        title=title, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), builds=builds, stages=stages,
        cases=cases, grid=grid, migrations=migrations, pairs=pairs, totals=totals, problems=problems,
        build_key=_build_key,
        links=lambda r: _artifact_links(r, origin[id(r)], output), sources=[str(p) for p in result_files],
        escape=html.escape,
    )
    target = output / "report.html"
    target.write_text(page)
    return target
