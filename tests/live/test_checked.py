"""Boot once, migrate many (conformance/live/checked.py) on the host's QEMU: a run's migrations start from
the boot stage's checked guest and prove it; a state that does not restore is an error with its evidence."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conformance.builds import find_qemu
from conformance.caps.model import QemuVersion
from conformance.cases import Case, Catalogue, load_catalogue
from conformance.live.boot import Target
from conformance.live.checked import LIVE_SAVE_FROM, CheckedState, CheckedStates, argv_digest
from conformance.live.migrate import _alias_to, make_checked, run_migrate, source_key
from conformance.machines import MachineChoice
from conformance.qemu.process import running_count
from conformance.runner import run_stages

pytestmark = pytest.mark.live


def _run(binary: Path, cases: list[str], output: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    run_stages(["boot", "migrate"], [binary], cases, output, lambda _t: None, jobs=2)
    results = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert not list(output.rglob("checked.state")), "state files are deleted after their last use"
    assert running_count() == 0
    return ({r["case"]: r for r in results if r["stage"] == "boot"},
            {r["case"]: r for r in results if r["stage"] == "migrate"})


def _restored_from_the_boot(boot: dict[str, Any], migration: dict[str, Any]) -> dict[str, Any]:
    assert migration["verdict"] == "pass", migration["reason"]
    assert boot["details"]["checked_state"].startswith("saved for the migrations"), boot["details"]
    restored = migration["details"]["restored"]
    assert restored["origin"] == "boot stage"
    assert restored["heartbeat"] > (restored["saved_heartbeat"] or 0)
    assert any("no new boot" in c for c in restored["checks"])
    assert migration["artifacts"]["source-checked"] == boot["artifacts"]["folder"]
    return restored


def _handed_over_by_the_boot(boot: dict[str, Any], migration: dict[str, Any], output: Path) -> dict[str, Any]:
    """The migration's source is the boot stage's own VM: handed over paused, resumed, proved the same guest."""
    assert boot["details"]["checked_state"].startswith("handed over paused"), boot["details"]
    assert boot["details"]["exit"].startswith("running, paused: handed over"), boot["details"]
    assert "restored" not in migration["details"] and "checked.state" not in str(migration["artifacts"])
    resumed = migration["details"]["resumed"]
    assert resumed["after"] == [] and resumed["heartbeat"] > (resumed["heartbeat_before"] or 0), resumed
    assert any("cont from paused" in c for c in resumed["checks"]) and any("no new boot" in c
                                                                            for c in resumed["checks"])
    assert migration["details"]["source_from"].startswith("the boot stage's checked VM")
    # one QEMU, one guest: the migration's source console is the boot's, and the guest booted once
    assert migration["artifacts"]["source-console"] == boot["artifacts"]["console"]
    assert (output / boot["artifacts"]["console"]).read_text(errors="replace").count("GUEST-INIT") == 1
    # its QEMU CPU s are told apart: the boot's up to the hand-over, the migration's after it
    assert 0 < migration["details"]["cpu_s"]["source"] < boot["details"]["cpu_s"], (migration["details"]["cpu_s"],
                                                                                      boot["details"]["cpu_s"])
    return resumed


def test_a_runs_migration_resumes_the_boot_stages_checked_vm(x86_target: Target, tmp_path: Path) -> None:
    """Each case migrates once on one build: the boot stage hands its checked VM over (no state is saved),
    and the migration resumes it, a failover guest's primary still plugged."""
    boots, migrations = _run(x86_target.binary, ["q35-minimal", "teaming-q35"], tmp_path)
    assert migrations["q35-minimal"]["verdict"] == "pass", migrations["q35-minimal"]["reason"]
    _handed_over_by_the_boot(boots["q35-minimal"], migrations["q35-minimal"], tmp_path)
    teaming = migrations["teaming-q35"]
    # a live migration under TCG before 9.0 may lose a write (known bug tcg-migration-lost-dirty-pages)
    assert teaming["verdict"] == "pass" or (x86_target.caps.version < LIVE_SAVE_FROM and "tcg-migration-lost-dirty"
                                            in teaming["details"].get("full_reason", teaming["reason"])), teaming
    _handed_over_by_the_boot(boots["teaming-q35"], teaming, tmp_path)


def test_a_key_with_two_migrations_restores_the_boot_stages_saved_state(x86_target: Target, x86_10_target: Target,
                                                                       tmp_path: Path) -> None:
    """The older build is the source of two migrations under its machine type (to itself, to the newer build):
    its boot stage saves the checked guest, and the key's first migration restores it."""
    if x86_target.binary == x86_10_target.binary:
        pytest.skip("the host's QEMU is 10.0: no older build to be the source of two migrations")
    run_stages(["boot", "migrate"], [x86_target.binary, x86_10_target.binary], ["q35-minimal"], tmp_path,
               lambda _t: None, jobs=2)
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert not list(tmp_path.rglob("checked.state")) and running_count() == 0
    older = str(x86_target.binary)
    (boot,) = [r for r in results if r["stage"] == "boot" and r["qemu"]["path"] == older]
    restored = [r for r in results if r["stage"] == "migrate" and "restored" in r["details"]]
    assert restored and all(r["qemu"]["path"] == older for r in restored), [r["details"].get("source_from")
                                                                            for r in results]
    _restored_from_the_boot(boot, restored[0])


def test_a_failed_hand_over_is_an_error_with_its_evidence_not_a_boot(x86_target: Target, tmp_path: Path) -> None:
    """The handed-over VM is not what was handed over (here: running, not paused): the migration is an error of
    the suite with the evidence, and starts no QEMU of its own."""
    from conformance.live.boot import run_boot
    from conformance.live.migrate import keep_checked

    catalogue = load_catalogue()
    case = catalogue.get("q35-minimal")
    key = source_key(case, x86_target, x86_target, "", tmp_path)
    assert key is not None
    states = CheckedStates(Counter({key: 1}))
    try:
        run = run_boot(case, x86_target, catalogue, tmp_path, keep=keep_checked(states, case, x86_target, catalogue,
                                                                              tmp_path))
        assert run.result.verdict == "pass", run.result.reason
        digest = argv_digest(run.argv, tmp_path / run.result.artifacts["folder"], _alias_to(x86_target.caps))
        handed = states.take(key, digest)
        assert handed is not None, run.result.details["checked_state"]
        handed.vm.process.qmp.cmd("cont")  # no longer the paused guest that was handed over
        assert states.hand(key, digest, handed)
        result = run_migrate(case, x86_target, x86_target, catalogue, tmp_path, checked=states)
    finally:
        states.close()
    assert result.verdict == "error", result.reason
    assert result.reason.startswith("resuming the boot stage's checked VM"), result.reason
    assert "not paused" in result.reason and "resume_stderr_tail" in result.details["resume_failed"]
    assert "exits" not in result.details, "no QEMU was started in its place"
    assert running_count() == 0


def _shared_state(case: Case, target: Target, catalogue: Catalogue, tmp_path: Path
                  ) -> tuple[CheckedState, CheckedStates]:
    """A checked state of the case made on the target, shared by its key's two planned migrations."""
    key = source_key(case, target, target, "", tmp_path)
    assert key is not None
    state = make_checked(case, target, catalogue, tmp_path, None, key, "test")
    assert not isinstance(state, str), state
    states = CheckedStates(Counter({key: 2}))
    states.add(key, argv_digest(state.argv, state.folder, _alias_to(target.caps)), state)
    return state, states


def test_a_failover_source_is_restored_with_its_primary_plugged_back(x86_10_target: Target, tmp_path: Path) -> None:
    """A key with two migrations shares a saved state: on 9.0 or later a failover guest is saved running, and
    each restore re-plugs its primary."""
    target = x86_10_target
    catalogue = load_catalogue()
    case = catalogue.get("teaming-q35")
    states = _shared_state(case, target, catalogue, tmp_path)[1]
    try:
        result = run_migrate(case, target, target, catalogue, tmp_path, checked=states)
    finally:
        states.close()
    assert result.verdict == "pass", result.reason
    restored = result.details["restored"]
    assert restored["origin"] == "test" and any("no new boot" in c for c in restored["checks"])
    assert any("plugged back and enslaved" in c for c in restored["checks"]), restored["checks"]
    assert running_count() == 0


def test_a_state_that_does_not_restore_is_an_error_with_its_evidence(x86_target: Target, tmp_path: Path) -> None:
    catalogue = load_catalogue()
    case = catalogue.get("q35-minimal")
    state, states = _shared_state(case, x86_target, catalogue, tmp_path)
    state.state_file.write_bytes(state.state_file.read_bytes()[:4096])  # cut short: QEMU cannot load it
    result = run_migrate(case, x86_target, x86_target, catalogue, tmp_path, checked=states)
    assert result.verdict == "error", result.reason
    assert result.reason.startswith("restoring the checked source"), result.reason
    assert result.details["restore_argv"] and "restored" in result.details
    assert "restore_stderr_tail" in result.details
    assert running_count() == 0


def test_a_state_its_own_build_cannot_load_is_not_shared(x86_target: Target, tmp_path: Path) -> None:
    """isa-cirrus-vga's saved state aborts QEMU 7.2 when loaded (known bug isa-cirrus-vga-load-alias-abort):
    the check after the save finds it, and the migrations boot their own source (verdicts as before)."""
    if x86_target.caps.version >= QemuVersion(8, 0, 0):
        pytest.skip(f"measured on QEMU 7.2; the host has {x86_target.caps.version}")
    catalogue = load_catalogue()
    case = catalogue.get("pc-isa-cirrus-vga")
    key = source_key(case, x86_target, x86_target, "", tmp_path)
    assert key is not None
    found: list[Any] = []
    made = make_checked(case, x86_target, catalogue, tmp_path, None, key, "test", found.append)
    assert isinstance(made, str) and "did not load the saved state" in made, made
    assert "memory_region_set_alias_offset" in made
    assert not list(tmp_path.rglob("checked.state"))
    assert running_count() == 0
    # ... and the load failure is a result of its own: a migrate of the build with itself through the state
    (result,) = found
    assert (result.stage, result.case, result.qemu, result.peer) == ("migrate", case.name, x86_target.build,
                                                                     x86_target.build)
    assert result.verdict == "known-bug", result.reason
    assert "isa-cirrus-vga-load-alias-abort" in result.reason and "does not load the checked state" in result.reason
    assert result.details["state_load"]["origin"] == "test"
    assert result.details["signal"] == "SIGABRT", result.details
    assert "memory_region_set_alias_offset" in result.details["restore_stderr_tail"]


def test_a_source_that_never_came_up_in_the_boot_stage_is_not_booted_again(tmp_path: Path) -> None:
    """Arm virt on 5.2 under TCG has no GICv3 ITS, so a case with a PCIe root port does not start (known bug
    arm-tcg-gicv3-no-its): its migration relies on the boot stage's result, which it names, and gets the
    verdict its own boot would have had; the unchecked pair boots nothing."""
    binary = find_qemu("5.2", "aarch64")
    if binary is None:
        pytest.skip("QEMU 5.2 for aarch64 is not fetched (qemu-conformance builds fetch 5.2)")
    boots, migrations = _run(binary, ["virtio-serial-channel"], tmp_path)
    boot, migration = boots["virtio-serial-channel"], migrations["virtio-serial-channel"]
    assert boot["verdict"] == "known-bug" and "arm-tcg-gicv3-no-its" in boot["reason"], boot["reason"]
    assert migration["verdict"] == "known-bug", migration["reason"]
    full = migration["details"].get("full_reason", migration["reason"])  # a long reason is cut in "reason"
    assert "arm-tcg-gicv3-no-its" in full and "source: QEMU did not start" in full, full
    assert migration["details"]["source_from"].startswith("this run's boot stage, not booted again: boot "
                                                          "virtio-serial-channel on QEMU 5.2.0 aarch64: known-bug")
    assert migration["details"]["source_boot"]["ended_by_itself"] is True
    assert "exits" not in migration["details"], "no QEMU was started for the migration"


def test_a_source_serves_the_next_migration_of_its_key_after_cont(x86_target: Target, tmp_path: Path) -> None:
    """Under one pinned machine type each build is the source of two migrations (to itself, to the other
    build): the first starts its source (a boot of its own: no state is saved for a guest that is not a failover
    one), keeps it paused once its destination is stopped, and the second resumes it with cont, proved by the
    heartbeat going on."""
    other = find_qemu("10.0")
    if other is None or other == x86_target.binary:
        pytest.skip("QEMU 10.0 for x86_64 is not fetched beside the host's (qemu-conformance builds fetch 10.0)")
    run_stages(["migrate"], [x86_target.binary, other], ["q35-minimal"], tmp_path, lambda _t: None, jobs=2,
               machines=MachineChoice.parse("pc-q35-7.2$"))
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert running_count() == 0
    assert len(results) == 4 and all(r["verdict"] == "pass" for r in results), [r["reason"] for r in results]
    by_source = Counter(r["qemu"]["path"] for r in results)
    assert set(by_source.values()) == {2}
    resumed = [r for r in results if "resumed" in r["details"]]
    assert len(resumed) == 2 and {r["qemu"]["path"] for r in resumed} == set(by_source), [
        r["details"].get("source_from") for r in results]
    for r in resumed:
        record = r["details"]["resumed"]
        # the sequence goes on: above the last heartbeat before the kept migration, or from the first one when
        # the guest migrated before its first heartbeat (a cloud guest's migration can take under one period)
        assert record["heartbeat"] > (record["heartbeat_before"] or 0), record
        kept = tmp_path / record["after"][-1].rsplit("(", 1)[1].rstrip(")") / record["folder"]
        assert (kept / "console.log").read_text(errors="replace").count("GUEST-INIT") == 1, kept  # no second boot
        assert any("no new boot" in c for c in record["checks"]), record
        assert r["details"]["source_from"].startswith("resumed: the source of "), r["details"]["source_from"]
    first = [r for r in results if "resumed" not in r["details"]]
    assert all(r["details"].get("source_kept") for r in first), [r["details"].get("exits") for r in first]
    assert all(r["details"]["cpu_s"]["source"] > 0 and r["details"]["cpu_s"]["destination"] > 0 for r in results)
    # a resumed source's share is its CPU since it was kept, not its boot's: below the booted ones'
    assert max(r["details"]["cpu_s"]["source"] for r in resumed) < min(r["details"]["cpu_s"]["source"] for r in first)
    argv = json.loads((tmp_path / first[0]["artifacts"]["source-cmdline"]).read_text())
    argv = argv["argv"] if isinstance(argv, dict) else argv
    # the bzImage unless QEMU_CONFORMANCE_DIRECT_KERNEL=1 asks for the kernel's ELF (conformance/live/boot.py)
    direct = os.environ.get("QEMU_CONFORMANCE_DIRECT_KERNEL", "").strip() == "1"
    assert Path(argv[argv.index("-kernel") + 1]).name.startswith("vmlinux-") == direct, argv
