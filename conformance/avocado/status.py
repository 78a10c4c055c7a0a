"""Our verdicts as avocado statuses: the one place that maps them (it moves to the verdict table of issue 9)."""

from __future__ import annotations

from conformance.results.records import VERDICTS

# verdict -> the result an nrunner runner reports (avocado shows it upper-case)
AVOCADO_STATUS = {
    "pass": "pass",
    "fail": "fail",
    "error": "error",
    "skip": "skip",
    "known-bug": "warn",  # a failure a known bug of this version explains: the bug is in the message
    "not-reproduced": "warn",  # a known bug that did not happen: fixed or backported?
}
assert set(AVOCADO_STATUS) == set(VERDICTS), "every verdict needs an avocado status"


def avocado_status(verdict: str, reason: str) -> tuple[str, str | None]:
    """(avocado result, its message): the message names the verdict when the status alone cannot."""
    status = AVOCADO_STATUS[verdict]
    if verdict == "pass":
        return status, None
    if verdict in ("known-bug", "not-reproduced"):
        return status, f"{verdict}: {reason}"
    return status, reason or verdict
