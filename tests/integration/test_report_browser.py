"""The HTML report in a real browser: Debian's Chromium, headless, driven by Playwright.

The results hold every verdict, a known bug flagged by version on a 4.2.0 fixture, a migration pair,
and text with <script> and & in it. The page must show the summary, the matrix and the known-bug
panel, open a drill-down on click, run no script from the data, and log no console error. The
screenshots are saved next to the test's output and copied to /tmp/report-screenshots/ for review.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conformance.report.html import write_report
from tests.helpers.results import every_verdict

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")  # Debian's package
SCREENSHOTS = Path("/tmp/report-screenshots")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install chromium "
                                "(scripts/setup.sh installs it)")


@contextmanager
def report_page(report: Path) -> Iterator[tuple[Any, list[str]]]:
    """The report open in headless Chromium, and the console errors, warnings and page errors it logs."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(report.as_uri(), wait_until="load")
            yield page, problems
        finally:
            browser.close()


def _shoot(page: object, path: Path, **kwargs: object) -> None:
    page.screenshot(path=str(path), **kwargs)  # type: ignore[attr-defined]
    SCREENSHOTS.mkdir(exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)


def test_report_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    report = write_report([every_verdict(tmp_path / "results")], tmp_path / "report")
    with report_page(report) as (page, problems):

        # the summary: a decision per build, the new failures first
        decision = page.locator("#summary .decision")
        expect(decision).to_be_visible()
        expect(decision).to_contain_text("NOT QUALIFIED")
        expect(page.locator("table.builds").first).to_contain_text("10.0.2 x86_64")
        expect(page.locator("table.failures")).to_contain_text("case-fail")
        _shoot(page, tmp_path / "report-summary.png")

        # the matrix, with the 4.2.0 fixture's known-bug chip
        matrix = page.locator("#matrix table.matrix")
        expect(matrix).to_be_visible()
        flag = matrix.locator(".chip.flag", has_text="vfio-irqchip-notifier-unplug-segv")
        expect(flag).to_be_visible()

        # the known-bug panel: flagged by version on 4.2.0, reproduced and not reproduced on 7.2.22
        bugs = page.locator("#bugs table.bugs")
        bugs.scroll_into_view_if_needed()
        expect(bugs).to_be_visible()
        expect(bugs).to_contain_text("4.2.0 x86_64 fixture")
        expect(bugs).to_contain_text("0446f81217 (4.2.1, 5.0.0)")

        # the migration matrix: both directions of the pair
        expect(page.locator("#migration")).to_contain_text("7.2.22 x86_64")
        expect(page.locator("#migration table.pairs")).to_contain_text("-> 10.0.2 x86_64")

        # a drill-down opens on click and shows the text as text
        row = matrix.locator("tr", has=page.locator("td.case", has_text="case-fail"))
        cell = row.locator("details").first
        drill = cell.locator(".drill")
        expect(drill).to_be_hidden()
        cell.locator("summary").click()
        expect(drill).to_be_visible()
        expect(drill).to_contain_text("<script>window.__pwned = true</script> & <img")
        expect(drill.locator("a", has_text="console")).to_have_attribute(
            "href", "../results/live/q35-minimal/console.log")
        _shoot(page, tmp_path / "report-drill-down.png")

        # one drill-down at a time: opening another closes the first
        other = matrix.locator("tr", has=page.locator("td.case", has_text="case-known-bug")).locator("details")
        other.first.locator("summary").click()
        expect(drill).to_be_hidden()

        # the filter (CSS only): cases without a failure or a known bug step aside
        other.first.locator("summary").click()  # closed again
        page.locator("#only-problems").check()
        expect(matrix.locator("tr", has=page.locator("td.case", has_text="case-pass"))).to_be_hidden()
        expect(row).to_be_visible()
        page.locator("#only-problems").uncheck()

        # no script from the data ran, nothing was fetched, nothing complained
        assert page.evaluate("() => window.__pwned") is None
        assert page.evaluate("() => document.scripts.length") == 0
        assert page.evaluate("() => performance.getEntriesByType('resource').length") == 0
        _shoot(page, tmp_path / "report-full.png", full_page=True)
    assert not problems, problems


def test_predicted_against_observed_in_chromium(tmp_path: Path) -> None:
    """The prediction table: missed and not confirmed rows stand out, the rules' record counts, and the
    observed verdict links the migration matrix cell of the live result."""
    from playwright.sync_api import expect

    from conformance.results.records import ResultWriter
    from tests.helpers.results import prediction_records

    writer = ResultWriter(tmp_path / "results")
    for r in prediction_records():
        writer.write(r)
    report = write_report([writer.path], tmp_path / "report")
    with report_page(report) as (page, problems):
        section = page.locator("#prediction")
        section.scroll_into_view_if_needed()
        expect(section).to_be_visible()
        expect(section.locator("table.rules")).to_contain_text("V5")
        missed = section.locator("tr.k-missed")
        expect(missed).to_have_count(1)
        expect(missed).to_contain_text("slirp instance id")
        agree = section.locator("tr.k-agree").first
        colour = "(el) => getComputedStyle(el.querySelector('td')).backgroundColor"
        assert missed.evaluate(colour) != agree.evaluate(colour), "a missed break stands out"
        assert section.locator("tr.k-not-confirmed").evaluate(colour) not in (agree.evaluate(colour),
                                                                              missed.evaluate(colour))
        _shoot(page, tmp_path / "report-prediction.png")
        link = missed.locator("a").first
        target = link.get_attribute("href")
        assert target and target.startswith("#m")
        link.click()
        expect(page.locator(f"[id='{target[1:]}']")).to_be_attached()
    assert not problems, problems
