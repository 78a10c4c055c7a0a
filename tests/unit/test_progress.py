"""Progress of long runs: a live status line on a terminal, one line per result in CI logs."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from conformance.progress import RunProgress, wants_live


def test_not_a_terminal_prints_one_line_per_result() -> None:
    lines: list[str] = []
    with RunProgress("boot", 3, lines.append, live=False) as progress:
        progress.done("pass", "[1/3] boot a: PASS")
        progress.done("fail", "[2/3] boot b: FAIL why")
        progress.done("known-bug", "[3/3] boot c: KNOWN-BUG bug")
    assert lines == ["[1/3] boot a: PASS", "[2/3] boot b: FAIL why", "[3/3] boot c: KNOWN-BUG bug"]
    assert progress.counts_text() == "fail 1  known-bug 1  pass 1"  # worst first, from the verdict table


def test_a_terminal_gets_a_status_line_and_the_results_that_are_not_passes() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    said: list[str] = []
    with RunProgress("migrate", 4, said.append, live=True, console=console) as progress:
        progress.done("pass", "[1/4] migrate a: PASS")
        progress.done("fail", "[2/4] migrate b: FAIL the destination died")
        progress._bar.refresh()  # type: ignore[union-attr]
        status = out.getvalue()
    assert said == [], "on a terminal nothing goes through the line printer"
    assert "migrate b: FAIL the destination died" in status and "migrate a: PASS" not in status
    assert "migrate" in status and "2/4" in status and "ETA" in status and "fail 1  pass 1" in status


@pytest.mark.parametrize(("env", "tty", "live"), [("", True, True), ("", False, False), ("lines", True, False),
                                                  ("live", False, True)])
def test_the_choice_follows_the_terminal_unless_told(monkeypatch: pytest.MonkeyPatch, env: str, tty: bool,
                                                     live: bool) -> None:
    monkeypatch.setenv("QEMU_CONFORMANCE_PROGRESS", env)
    monkeypatch.setenv("TERM", "xterm")
    stream = io.StringIO()
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    assert wants_live(stream) is live
