"""Our verdicts as avocado statuses, read from the verdict table (conformance/results/verdicts.py)."""

from __future__ import annotations

from conformance.results.verdicts import TABLE, verdict

# verdict -> the result an nrunner runner reports (avocado shows it upper-case)
AVOCADO_STATUS = {v.name: v.avocado for v in TABLE}


def avocado_status(name: str, reason: str) -> tuple[str, str | None]:
    """(avocado result, its message): the message names the verdict when the status alone cannot
    (known-bug and not-reproduced both show as WARN)."""
    status = verdict(name).avocado
    if name == "pass":
        return status, None
    if status == "warn":
        return status, f"{name}: {reason}"
    return status, reason or name
