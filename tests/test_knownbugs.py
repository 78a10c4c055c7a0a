"""The known-bugs database and its matcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.caps.model import QemuVersion
from conformance.errors import CaseError
from conformance.knownbugs.matcher import expected_bugs, explain_failure, load_bugs


def test_database_loads_with_the_research_entries() -> None:
    ids = {b.id for b in load_bugs()}
    assert {"vfio-irqchip-notifier-unplug-segv", "pcie-aer-uncor-mask-migration",
            "failover-paused-guest"} <= ids


def test_version_ranges_decide() -> None:
    v420, v421 = QemuVersion(4, 2, 0), QemuVersion(4, 2, 1)
    hit = explain_failure(v420, "boot", signal="SIGSEGV", text="vfio-pci unplug")
    assert hit is not None and hit.id == "vfio-irqchip-notifier-unplug-segv"
    later = explain_failure(v421, "boot", signal="SIGSEGV", text="vfio-pci unplug")
    assert later is None or later.id != "vfio-irqchip-notifier-unplug-segv"
    assert explain_failure(QemuVersion(7, 2, 22), "boot", signal="SIGSEGV", text="vfio unplug") is None


def test_symptom_must_match() -> None:
    assert explain_failure(QemuVersion(8, 0, 0), "migrate", text="Missing section footer for 0000:00:02.0/pcie")
    assert explain_failure(QemuVersion(8, 0, 0), "migrate", text="guest never booted") is None
    assert explain_failure(QemuVersion(8, 0, 0), "boot", text="Missing section footer") is None


TEAM_Q35 = ["qemu", "-machine", "pc-q35-5.2", "-device", "virtio-net-pci,failover=on,id=n",
            "-device", "vfio-pci,host=0000:03:07.1,id=hostdev0,failover_pair_id=n"]


def test_expected_bugs_respect_needed_hardware() -> None:
    v = QemuVersion(4, 2, 0)
    assert "vfio-irqchip-notifier-unplug-segv" not in {b.id for b in expected_bugs(v, "migrate", TEAM_Q35)}
    assert "vfio-irqchip-notifier-unplug-segv" in {b.id for b in expected_bugs(v, "migrate", TEAM_Q35,
                                                                               available={"vfio"})}


def test_expected_bugs_need_the_configuration_the_stage_and_the_side() -> None:
    v52 = QemuVersion(5, 2, 0)
    assert [b.id for b in expected_bugs(v52, "migrate", TEAM_Q35, side="source")] == [
        "pcie-native-hotplug-plug-read-as-unplug"]
    assert expected_bugs(v52, "migrate", TEAM_Q35, side="destination") == []
    assert expected_bugs(v52, "boot", TEAM_Q35) == []
    assert expected_bugs(v52, "migrate", TEAM_Q35[:3]) == []  # no failover pair
    assert expected_bugs(QemuVersion(7, 2, 22), "migrate", TEAM_Q35) == []


def test_bad_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bugs.toml"
    bad.write_text('[bugs.x]\ntitle = "t"\naffected = ["4.2"]\n')
    with pytest.raises(CaseError, match="known bug x: bad entry"):
        load_bugs(str(bad))


SLIRP = "destination exit code 1: Unknown savevm section or instance 'slirp' 1. Make sure that ..."


def test_a_migration_bug_needs_its_side_and_its_peer_version() -> None:
    """slirp's numbered sections (8.2+) break only an older destination, fed by an 8.2+ source."""
    v72, v100 = QemuVersion(7, 2, 22), QemuVersion(10, 0, 2)
    hit = explain_failure(v72, "migrate", text=SLIRP, peer=v100, side="destination")
    assert hit is not None and hit.id == "slirp-instance-id-backward-migration"
    assert explain_failure(v72, "migrate", text=SLIRP, peer=v100, side="source") is None
    assert explain_failure(v72, "migrate", text=SLIRP, peer=QemuVersion(7, 2, 0), side="destination") is None
    assert explain_failure(v100, "migrate", text=SLIRP, peer=v72, side="destination") is None


def test_native_hotplug_wait_is_not_taken_for_a_paused_guest() -> None:
    v52 = QemuVersion(5, 2, 0)
    waited = "wait-unplug timeout: still in wait-unplug after 15 s; after migrate_cancel: ..."
    hit = explain_failure(v52, "migrate", text=waited, side="source")
    assert hit is not None and hit.id == "pcie-native-hotplug-plug-read-as-unplug"
    assert explain_failure(QemuVersion(7, 2, 22), "migrate", text=waited, side="source") is None
    paused = "wait-unplug timeout: still in wait-unplug after 15 s with the guest paused; ..."
    for version in (v52, QemuVersion(7, 2, 22), QemuVersion(10, 0, 2)):
        bug = explain_failure(version, "migrate", text=paused, side="source")
        assert bug is not None and bug.id == "failover-paused-guest", version


def test_a_bad_side_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bugs.toml"
    bad.write_text('[bugs.x]\ntitle = "t"\naffected = ["4.2.0", "4.2.0"]\nside = "both"\n')
    with pytest.raises(CaseError, match=r"known bug x: bad entry.*side must be"):
        load_bugs(str(bad))


def _argv_outcome(case: str, fixture: str):  # type: ignore[no-untyped-def]
    from conformance.caps.store import resolve
    from conformance.cases import load_catalogue
    from conformance.static import StaticRunner

    catalogue = load_catalogue()
    return next(o for o in StaticRunner(catalogue).run(catalogue.get(case), resolve(fixture)) if o.stage == "argv")


@pytest.mark.parametrize(("case", "fixture", "flagged"), [
    ("teaming-q35-hostdev", "4.2.0:x86_64", True),
    ("teaming-q35", "4.2.0:aarch64", True),
    ("teaming-q35-hostdev", "5.2.0:x86_64", False),  # fixed in 4.2.1 and 5.0.0
    ("q35-minimal", "4.2.0:x86_64", False),  # no VF to unplug
])
def test_static_stage_flags_the_4_2_0_vf_unplug_segfault_by_configuration(case: str, fixture: str,
                                                                          flagged: bool) -> None:
    outcome = _argv_outcome(case, fixture)
    assert outcome.verdict == "pass", outcome.reason  # the flag does not change the stage's verdict
    ids = {b["id"] for b in outcome.known_bugs}
    assert ("vfio-irqchip-notifier-unplug-segv" in ids) is flagged, ids
    if flagged:
        bug = next(b for b in outcome.known_bugs if b["id"] == "vfio-irqchip-notifier-unplug-segv")
        assert "4.2.1" in bug["fixed"] and "0446f81217" in bug["fixed"] and "teaming" in bug["concerns"]


def test_concerns_match_the_argv_not_the_case_name() -> None:
    from conformance.knownbugs.matcher import bugs_concerning

    argv = ["qemu", "-machine", "pc-q35-4.2,usb=off", "-device", '{"driver":"virtio-net-pci","failover":true,"id":"n"}',
            "-device", "vfio-pci,host=0000:03:07.1,id=hostdev0,failover_pair_id=n"]
    ids = {b.id for b in bugs_concerning(QemuVersion(4, 2, 0), argv)}
    assert {"vfio-irqchip-notifier-unplug-segv", "pcie-native-hotplug-plug-read-as-unplug"} <= ids
    pc = [a.replace("pc-q35-4.2", "pc-i440fx-4.2") for a in argv]
    assert "pcie-native-hotplug-plug-read-as-unplug" not in {b.id for b in bugs_concerning(QemuVersion(4, 2, 0), pc)}
    plain = [*argv[:3], "-device", "virtio-net-pci,id=n"]
    assert not {b.id for b in bugs_concerning(QemuVersion(4, 2, 0), plain)} & {"vfio-irqchip-notifier-unplug-segv"}


def test_bad_concerns_are_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bugs.toml"
    bad.write_text('[bugs.x]\ntitle = "t"\naffected = ["4.2.0", "4.2.0"]\nconcerns = { device = [] }\n')
    with pytest.raises(CaseError, match=r"known bug x: bad entry.*unknown key"):
        load_bugs(str(bad))


def test_arm_tcg_cpu_state_bug_needs_aarch64_and_two_versions() -> None:
    text = "destination exit code 1: qemu-system-aarch64: error while loading state for instance 0x0 of device 'cpu'"
    v72, v100 = QemuVersion(7, 2, 22), QemuVersion(10, 0, 2)
    hit = explain_failure(v100, "migrate", text=text, peer=v72, side="destination", arch="aarch64")
    assert hit is not None and hit.id == "arm-tcg-cpreg-cross-version"
    assert explain_failure(v100, "migrate", text=text, peer=v100, side="destination", arch="aarch64") is None
    assert explain_failure(v100, "migrate", text=text, peer=v72, side="destination", arch="x86_64") is None


def test_tcg_gicv3_without_its_explains_the_5_2_aarch64_start_failure() -> None:
    text = "QEMU did not start (exit code 1): -device pcie-root-port: MSI-X is not supported by interrupt controller"
    hit = explain_failure(QemuVersion(5, 2, 0), "boot", text=text, arch="aarch64")
    assert hit is not None and hit.id == "arm-tcg-gicv3-no-its"
    pinned = explain_failure(QemuVersion(7, 2, 22), "migrate", text=text, arch="aarch64", side="source")
    assert pinned is not None and pinned.id == "arm-tcg-gicv3-no-its"  # virt-5.2 on 7.2: no TCG ITS either
    assert explain_failure(QemuVersion(7, 2, 22), "boot", text=text, arch="x86_64") is None


def test_lost_tcg_dirty_pages_need_tcg_the_source_side_and_a_version_before_9_0() -> None:
    """The destination's RAM differs from the stopped source's: QEMU before 9.0 under TCG (03bfc2188f)."""
    text = "destination RAM differs from the source's at the switch: 3 page(s) of 4096 bytes (0xf620000, ...)"
    v72 = QemuVersion(7, 2, 22)
    hit = explain_failure(v72, "migrate", text=text, peer=v72, side="source", accel="tcg")
    assert hit is not None and hit.id == "tcg-migration-lost-dirty-pages"
    assert explain_failure(v72, "migrate", text=text, peer=v72, side="source", accel="kvm") is None
    assert explain_failure(QemuVersion(10, 0, 2), "migrate", text=text, peer=v72, side="source", accel="tcg") is None
    assert explain_failure(v72, "migrate", text="guest kernel panic: Fatal exception in interrupt", side="source",
                           accel="tcg") is None  # a panic alone is not this bug's evidence
