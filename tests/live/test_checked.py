"""Boot once, migrate many (conformance/live/checked.py) on the host's QEMU: a run's migrations start from
the boot stage's checked guest and prove it; a state that does not restore is an error with its evidence."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conformance.cases import load_catalogue
from conformance.live.boot import Target
from conformance.live.checked import CheckedStates, argv_digest
from conformance.live.migrate import make_checked, run_migrate, source_key
from conformance.qemu.process import running_count
from conformance.runner import run_stages

pytestmark = pytest.mark.live


def test_a_runs_migrations_restore_the_boot_stages_checked_guest(x86_target: Target, tmp_path: Path) -> None:
    run_stages(["boot", "migrate"], [x86_target.binary], ["q35-minimal", "teaming-q35"], tmp_path, lambda _t: None,
               jobs=2)
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    boots = {r["case"]: r for r in results if r["stage"] == "boot"}
    migrations = {r["case"]: r for r in results if r["stage"] == "migrate"}
    assert set(migrations) == {"q35-minimal", "teaming-q35"}
    for case, result in migrations.items():
        assert result["verdict"] == "pass", result["reason"]
        assert boots[case]["details"]["checked_state"].startswith("saved for the migrations"), boots[case]["details"]
        restored = result["details"]["restored"]
        assert restored["origin"] == "boot stage"
        assert restored["heartbeat"] > (restored["saved_heartbeat"] or 0)
        assert any("no new boot" in c for c in restored["checks"])
        assert result["artifacts"]["source-checked"] == boots[case]["artifacts"]["folder"]
    assert any("plugged back and enslaved" in c for c in migrations["teaming-q35"]["details"]["restored"]["checks"])
    assert not list(tmp_path.rglob("checked.state")), "state files are deleted after their last use"
    assert running_count() == 0


def test_a_state_that_does_not_restore_is_an_error_with_its_evidence(x86_target: Target, tmp_path: Path) -> None:
    catalogue = load_catalogue()
    case = catalogue.get("q35-minimal")
    key = source_key(case, x86_target, x86_target, "", tmp_path)
    assert key is not None
    state = make_checked(case, x86_target, catalogue, tmp_path, None, key, "test")
    assert not isinstance(state, str), state
    state.state_file.write_bytes(state.state_file.read_bytes()[:4096])  # cut short: QEMU cannot load it
    states = CheckedStates(Counter({key: 2}))
    states.add(key, argv_digest(state.argv, state.folder), state)
    result = run_migrate(case, x86_target, x86_target, catalogue, tmp_path, checked=states)
    assert result.verdict == "error", result.reason
    assert result.reason.startswith("restoring the checked source"), result.reason
    assert result.details["restore_argv"] and "restored" in result.details
    assert "restore_stderr_tail" in result.details
    assert running_count() == 0
