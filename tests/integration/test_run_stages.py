"""`run --stages` on the host's QEMU records what was asked and nothing else (the planner of
conformance/plan.py, tested without QEMU in tests/unit/test_plan.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cases import load_catalogue
from conformance.cli import main
from conformance.plan import work_items
from conformance.results.records import read_results

pytestmark = pytest.mark.live


@pytest.mark.smoke
def test_run_stages_parse_records_parse_only(qemu_x86_64: Path, tmp_path: Path) -> None:
    """`run --stages parse` did also record argv (the static stages ran as one); now only what is asked."""
    out = tmp_path / "out"
    rc = main(["run", "--stages", "parse", "--qemu", str(qemu_x86_64), "--cases", "teaming*", "--cases",
               "q35-minimal", "-o", str(out)])
    assert rc == 0
    results = list(read_results(out / "results.jsonl"))
    cases = load_catalogue().select(["teaming*", "q35-minimal"])
    planned = {i.case for i in work_items(cases, [(results[0].qemu.version + "-x86_64", "x86_64")], ["parse"])}
    assert {r.stage for r in results} == {"parse"} and {r.case for r in results} == planned
    assert len(results) == len(planned) and not (out / "argv").exists()
    rc = main(["run", "--stages", "argv", "--caps", "10.0.0:x86_64", "--cases", "q35-minimal", "-o", str(out)])
    assert rc == 0  # argv alone: parse's work is done, parse is not recorded
    assert [(r.case, r.stage, r.verdict) for r in read_results(out / "results.jsonl")] == \
        [("q35-minimal", "argv", "pass")]
