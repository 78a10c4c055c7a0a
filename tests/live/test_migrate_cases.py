"""Every bootable case migrated live on every (source, destination) pair of QEMU binaries of one arch.

By default the host's binaries, each with itself; ``--conformance-qemu`` adds builds (10.0, 5.2), and
then every pair is migrated both ways with the machine type pinned. A known bug is an xfail naming it;
any other failure fails the test with the migration's timeline.
"""

from __future__ import annotations

from pathlib import Path

from conformance.pytest_plugin import MigrateCombo, check_verdict


def test_migrate(migrate_combo: MigrateCombo, conformance_output: Path) -> None:
    result = migrate_combo.run(conformance_output)
    check_verdict(result, {k: result.details.get(k) for k in ("timeline", "checks", "stats") if result.details.get(k)})
    assert result.peer is not None and result.qemu is not None
    source_statuses = [s["status"] for s in result.details["timeline"] if s["side"] == "source"]
    assert source_statuses[-1] == "completed", source_statuses
    assert result.details["stats"].get("ram-transferred", 0) > 0
    assert any("heartbeat" in check for check in result.details["checks"])
    # the destination, loaded and still paused, held the stopped source's RAM (or the verdict says otherwise)
    assert result.details["ram"]["compared_mib"] >= 128, result.details["ram"]
