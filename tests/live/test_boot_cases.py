"""Every bootable case on every QEMU binary under test, booted with the real test guest.

The argv is the one the static stage builds for that binary's probed capabilities; the guest's
own report must show what the domain asked for (NICs with MAC and driver, the failover master
with standby and primary, disks, consoles, vCPUs, memory), and QMP must agree.
"""

from __future__ import annotations

from pathlib import Path

from conformance.pytest_plugin import LiveCombo, check_verdict


def test_boot(live_combo: LiveCombo, conformance_output: Path) -> None:
    run = live_combo.run(conformance_output)
    result = run.result
    check_verdict(result, {k: result.details.get(k) for k in ("console_tail", "stderr_tail", "changes")
                           if result.details.get(k)})
    assert result.details["checked"], "a boot that checks nothing proves nothing"
    assert run.report is not None and run.report.boot_complete
    assert result.accel in ("tcg", "kvm")
