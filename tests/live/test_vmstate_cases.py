"""The static migration prediction (stage ``vmstate``) of every case that lists it, on the pairs and machine
types ``migrate_combo`` migrates (``vmstate_combo``, conformance/pytest_plugin.py). Real QEMU answers
(``-dump-vmstate``, paused probes), no guest. The answers are cached by build, but a cold cache (a fresh
clone's CI) starts paused QEMUs: the plugin marks each prediction ``live``, and ``smoke`` where its migration
is in the smoke set (docs/machines.md gives the smoke set's cold cost). A predicted hazard fails the test with
its rule and reason; a known bug is an xfail naming it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.pytest_plugin import VmstateCombo, check_verdict


def test_vmstate(vmstate_combo: VmstateCombo, conformance_output: Path) -> None:
    result = vmstate_combo.run(conformance_output)
    check_verdict(result, {"devices": result.details.get("devices")})
    assert result.stage == "vmstate" and result.peer is not None
    assert result.details["machine"], "the machine type judged"
    if vmstate_combo.machine:
        assert result.details["machine"] == vmstate_combo.machine
    assert set(result.details["devices"].values()) <= {"compatible"}


@pytest.mark.live  # the machine types come from the build's probe (QEMU, when its cache is cold)
@pytest.mark.smoke
def test_the_pytest_plugin_parametrises_one_prediction_per_machine_type(qemu_x86_64: Path) -> None:
    from conformance.pytest_plugin import _binary_names, migrate_params, vmstate_params

    build = _binary_names(qemu_x86_64)[0]
    params = vmstate_params([qemu_x86_64], ["q35-minimal"], r"pc-q35-[57]\.2$")
    assert [p.id for p in params] == [f"q35-minimal[{build}->{build}@pc-q35-{v}.2]" for v in (5, 7)]
    assert [p.values[0].machine for p in params] == ["pc-q35-5.2", "pc-q35-7.2"]
    assert [p.id for p in params] == [p.id for p in migrate_params([qemu_x86_64], ["q35-minimal"],
                                                                   r"pc-q35-[57]\.2$")], "the migrations' ids"
    assert [p.id for p in vmstate_params([qemu_x86_64], ["q35-minimal"])] == [f"q35-minimal[{build}->{build}]"]
    # a cold cache starts paused QEMUs: live; smoke as the migrations (q35-minimal: one machine type)
    assert [sorted(m.name for m in p.marks) for p in params] == [["live", "smoke"], ["live"]]
