"""Write the HTML report: a release decision at a glance.

Top to bottom: the summary (each build QUALIFIED or not, new failures first), the compatibility
matrix (cases x builds, a chip per stage), the migration matrix (source x destination build), the
known bugs by build, capability drift, and a legend. Every cell opens a drill-down (<details>) with
the reason, the artefacts as links relative to the report, and short excerpts of what went wrong.

Results from several runs (CI shards, machines) merge: later records of the same (case, build,
stage) replace earlier ones (model.merge). Verdict order, colours, labels and what counts as a
failure come from the verdict table (conformance/results/verdicts.py) only.

The page is one self-contained file: inline CSS, no script at all, and a Content-Security-Policy
that forbids scripts and every fetch, so nothing in the data can run or load even if it slipped
past the escaping (jinja's autoescape, and markupsafe's in fragments.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from conformance import prediction
from conformance.data import package_file
from conformance.report import fragments
from conformance.report.coverage_panel import CoverageRow, coverage_rows, load_coverage
from conformance.report.model import BUG_HOWS, EXCERPT_ARTIFACTS, FAILURE_ROWS, build_page, merge
from conformance.results.junit import write_junit
from conformance.results.records import StageResult
from conformance.results.verdicts import BY_NAME, FAILURES, TABLE
from conformance.stages import STAGES, stage

__all__ = ["merge", "render", "write_report"]

LIST_LIMIT = 8  # case names shown in a known-bug row before "and N more"

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(package_file("report")), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(records: list[StageResult], origin: dict[int, Path], output: Path, title: str, sources: int,
           coverage: list[CoverageRow] | None = None) -> str:
    """The page for these merged records (``origin``: the results file each came from; ``coverage``: the
    device-coverage panel's rows)."""
    page = build_page(records, origin, output)
    return _ENV.get_template("report.html.j2").render(
        title=title, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), sources=sources, page=page,
        table=TABLE, failure_names=FAILURES, label=lambda name: BY_NAME[name].label, stage_order=STAGES,
        stage_letters={stage(s).chip: s for s in page.stages}, bug_hows=BUG_HOWS, evidence=EXCERPT_ARTIFACTS,
        list_limit=LIST_LIMIT, failure_rows=FAILURE_ROWS, row=fragments.row, coverage=coverage or [])


def write_report(result_files: list[Path], output: Path, title: str = "QEMU compatibility report") -> Path:
    """OUTPUT/report.html and, from the same merged results, OUTPUT/junit.xml and (when they hold vmstate and
    migrate results) OUTPUT/prediction.json, the predicted-against-observed summary; the page's path."""
    records, origin = merge(result_files)
    output.mkdir(parents=True, exist_ok=True)
    write_junit(records, output / "junit.xml")
    target = output / "report.html"
    coverage = coverage_rows(load_coverage(result_files, output))
    if any(r.stage == "vmstate" for r in records) and any(r.stage == "migrate" for r in records):
        (output / "prediction.json").write_text(json.dumps(prediction.summary(records), indent=1) + "\n")
    target.write_text(render(records, origin, output, title, len(result_files), coverage), encoding="utf-8")
    return target
