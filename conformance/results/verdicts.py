"""The verdict table: every verdict a result can have, worst first, and what each means elsewhere.

This is the one place that says which verdicts fail a run, how the report colours and labels them,
and what they become in JUnit, avocado and pytest. Runner, qualify, report, JUnit, avocado and the
pytest plugin read it; nothing else spells verdicts out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    name: str
    label: str  # terminal and report text
    meaning: str  # one line for the report's legend
    failure: bool  # counts against a run and a qualification
    colour: str  # report background
    junit: str  # "passed", "failure", "error" or "skipped"
    avocado: str  # the status an avocado nrunner runner reports
    pytest: str  # "pass", "fail", "skip" or "xfail"


#: Worst first: a cell that holds several results shows the first of these it has.
TABLE: tuple[Verdict, ...] = (
    Verdict("error", "ERROR", "the suite could not run the stage (bad input, missing tool, QEMU gone)",
            failure=True, colour="#f3a5a5", junit="error", avocado="error", pytest="fail"),
    Verdict("fail", "FAIL", "QEMU did not do what the case expects: a regression candidate",
            failure=True, colour="#f8c9c9", junit="failure", avocado="fail", pytest="fail"),
    Verdict("interrupted", "INTERRUPTED",
            "the run was stopped (Ctrl-C or SIGTERM) before this item finished: no verdict on QEMU",
            failure=True, colour="#e3d4f2", junit="error", avocado="interrupted", pytest="fail"),
    Verdict("known-bug", "KNOWN BUG", "a failure that a known bug of this QEMU version explains",
            failure=False, colour="#fde7b0", junit="skipped", avocado="warn", pytest="xfail"),
    Verdict("not-reproduced", "NOT REPRODUCED",
            "a known bug of this version did not show: fixed upstream or backported by the package?",
            failure=False, colour="#dfe9fb", junit="passed", avocado="warn", pytest="pass"),
    Verdict("pass", "PASS", "the stage did what the case expects",
            failure=False, colour="#d9f2d9", junit="passed", avocado="pass", pytest="pass"),
    Verdict("skip", "SKIP", "the stage cannot run here (its reason says why)",
            failure=False, colour="#eeeeee", junit="skipped", avocado="skip", pytest="skip"),
)

BY_NAME: dict[str, Verdict] = {v.name: v for v in TABLE}
VERDICTS: tuple[str, ...] = tuple(BY_NAME)
FAILURES: frozenset[str] = frozenset(v.name for v in TABLE if v.failure)


def verdict(name: str) -> Verdict:
    """The table's row for ``name``; ValueError for a name that is not a verdict."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"verdict {name!r} is not one of {', '.join(VERDICTS)}") from None


def is_failure(name: str) -> bool:
    return verdict(name).failure


def failures(counts: dict[str, int]) -> int:
    """How many of the counted verdicts are failures."""
    return sum(n for name, n in counts.items() if name in FAILURES)


def worst(names: Iterable[str]) -> str:
    """The worst of these verdicts ("" for none)."""
    return min(names, key=VERDICTS.index, default="")
