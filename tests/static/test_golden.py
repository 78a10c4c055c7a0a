"""Golden command lines: the argv of every case on every fixture of its arch, compared exactly with
tests/data/golden/CASE.ARCH-VERSION.args (libvirt's NAME.x86_64-7.2.0.args habit); a case that must be
refused keeps its message in CASE.ARCH-VERSION.err.

Regenerate on purpose and review the change as a diff:

    QEMU_CONFORMANCE_REGENERATE=1 pytest tests/static/test_golden.py && git diff tests/data/golden
"""

from __future__ import annotations

import os

import pytest

from conformance.argv.command import format_args
from conformance.pytest_plugin import StaticCombo
from tests.helpers import DATA

GOLDEN = DATA / "golden"
REGENERATE = os.environ.get("QEMU_CONFORMANCE_REGENERATE") == "1"


def golden_text(static_combo: StaticCombo) -> tuple[str, str] | None:
    """(suffix, text) of this combination's argv stage, None when it does not reach one."""
    outcomes = {o.stage: o for o in static_combo.run()}
    argv = outcomes.get("argv")
    if argv is not None and argv.argv and argv.verdict == "pass":
        return ".args", format_args(argv.argv)
    refused = argv if argv is not None and argv.verdict == "pass" else outcomes.get("parse")
    if refused is not None and refused.verdict == "pass" and refused.reason.startswith(("rejected", "rejected as")):
        return ".err", refused.reason.split(": ", 1)[-1] + "\n"
    return None


def test_golden_argv(static_combo: StaticCombo) -> None:
    from conformance.caps.store import load

    caps = load(static_combo.fixture)
    stem = GOLDEN / f"{static_combo.case_name}.{caps.arch}-{caps.version}"
    got = golden_text(static_combo)
    if got is None:
        pytest.skip("the case does not reach the argv stage on this fixture (see the static matrix)")
    suffix, text = got
    path = stem.with_suffix(stem.suffix + suffix)
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (".args", ".err"):
            stem.with_suffix(stem.suffix + stale).unlink(missing_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no golden file {path.name} (QEMU_CONFORMANCE_REGENERATE=1 writes it)"
    assert text == path.read_text(), f"{path.name} differs (QEMU_CONFORMANCE_REGENERATE=1 rewrites it; review the diff)"


def test_no_orphan_golden_files() -> None:
    """Every golden file belongs to a case and a fixture that still exist."""
    from conformance.caps.store import fixture_files, load
    from conformance.cases import load_catalogue

    names = set(load_catalogue().cases)
    labels = {f"{c.arch}-{c.version}" for c in (load(p) for p in fixture_files())}
    files = sorted(GOLDEN.glob("*.args")) + sorted(GOLDEN.glob("*.err"))
    assert len(files) >= 300
    for path in files:
        case, _, rest = path.name.partition(".")
        assert case in names, path.name
        assert rest.rsplit(".", 1)[0] in labels, path.name
