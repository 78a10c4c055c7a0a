"""The known-bugs database and its one applicability rule (conformance/knownbugs/matcher.py), the recorded
evidence per bug (tests/data/knownbugs/), and `qemu-conformance bugs`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from conformance.caps.model import QemuVersion
from conformance.errors import CaseError
from conformance.knownbugs.cli import facts_of, read_records, retriage
from conformance.knownbugs.matcher import (
    Facts,
    bugs_concerning,
    check,
    expected_bugs,
    explain_failure,
    load_bugs,
    ranked,
)
from conformance.results.records import StageResult
from tests.helpers import DATA

EVIDENCE = DATA / "knownbugs"
V = QemuVersion.parse

TEAM_Q35 = ("qemu", "-machine", "pc-q35-5.2", "-device", "virtio-net-pci,failover=on,id=n",
            "-device", "vmxnet3,id=hostdev0,failover_pair_id=n")
VF_Q35 = ("qemu", "-machine", "pc-q35-4.2", "-device", "virtio-net-pci,failover=on,id=n",
          "-device", "vfio-pci,host=0000:03:07.1,id=hostdev0,failover_pair_id=n")
PLAIN_Q35 = ("qemu", "-machine", "pc-q35-8.0", "-device", "virtio-net-pci,id=n")


def explained(**facts: object) -> list[str]:
    return [b.id for b in explain_failure(Facts(**facts)).bugs]  # type: ignore[arg-type]


def test_database_loads_with_the_research_entries() -> None:
    ids = {b.id for b in load_bugs()}
    assert {"vfio-irqchip-notifier-unplug-segv", "pcie-aer-uncor-mask-migration",
            "failover-paused-guest"} <= ids


# ------------------------------------------------------------------------------------------ the rule

def test_the_issues_permissive_matches_are_gone() -> None:
    """Issue 18's three consequences of an explain path that ignored concerns and needs."""
    generic = "destination exit code 1: qemu-system-x86_64: load of migration failed: Invalid argument"
    for version in ("8.0.0", "9.0.0"):  # no AER port, no virtio-gpu, the same version on both sides
        assert explained(version=V(version), stage="migrate", side="destination", peer=V(version), arch="x86_64",
                         accel="tcg", argv=PLAIN_Q35, text=generic) == []
    assert explained(version=V("6.2.0"), stage="boot", arch="x86_64", accel="tcg", argv=PLAIN_Q35,
                     text="device_del n: no DEVICE_DELETED within 10 s") == []
    for version in ("4.2.1", "7.2.22"):  # a vfio-pci SIGSEGV, but no vfio on this host
        assert "vfio-realize-error-path-segv" not in explained(
            version=V(version), stage="boot", arch="x86_64", accel="tcg", argv=VF_Q35, signal="SIGSEGV",
            text="device_add vfio-pci failed in realize")


def test_needs_decide_and_are_reported() -> None:
    facts = Facts(version=V("7.2.22"), stage="boot", arch="x86_64", accel="tcg", argv=VF_Q35, signal="SIGSEGV",
                  text="device_add vfio-pci failed in realize")
    bug = next(b for b in load_bugs() if b.id == "vfio-realize-error-path-segv")
    without = check(bug, facts)
    assert not without.holds and [c.name for c in without.failed] == ["needs"]
    assert "vfio not available here" in without.why()
    with_vfio = check(bug, dataclasses.replace(facts, available=frozenset({"vfio"})))
    assert with_vfio.holds, with_vfio.why()


def test_version_ranges_decide() -> None:
    base = {"stage": "migrate", "side": "source", "arch": "x86_64", "accel": "tcg", "argv": VF_Q35,
            "available": frozenset({"vfio"}), "signal": "SIGSEGV", "text": "vfio-pci unplug"}
    assert "vfio-irqchip-notifier-unplug-segv" in explained(version=V("4.2.0"), **base)
    assert "vfio-irqchip-notifier-unplug-segv" not in explained(version=V("4.2.1"), **base)
    assert explained(version=V("7.2.22"), **base) == []


def test_every_condition_is_checked_in_the_rules_order_and_said() -> None:
    bug = next(b for b in load_bugs() if b.id == "pcie-aer-uncor-mask-migration")
    facts = Facts(version=V("8.0.0"), stage="migrate", side="source", peer=V("8.0.0"), arch="x86_64", accel="tcg",
                  argv=PLAIN_Q35, text="load of migration failed")
    result = check(bug, facts)
    assert [c.name for c in result.conditions] == ["version", "stage", "arch", "accel", "side", "peer", "machine",
                                                   "concerns", "needs", "symptom"]
    assert {c.name for c in result.failed} == {"peer", "machine", "concerns"}
    assert "peer 8.0.0 is the same version" in result.why() and "pc-q35-8.0 does not match" in result.why()
    stopped = check(bug, facts, full=False)
    assert [c.name for c in stopped.conditions][-1] == "peer"  # stops at the first failure


def test_a_fact_the_bug_restricts_but_the_result_lacks_fails_it() -> None:
    """No argv, no accelerator: a bug that needs them never explains the result."""
    text = "QEMU did not start (exit code 1): -device pcie-root-port: MSI-X is not supported by interrupt controller"
    bug = next(b for b in load_bugs() if b.id == "arm-tcg-gicv3-no-its")
    no_argv = check(bug, Facts(version=V("5.2.0"), stage="boot", arch="aarch64", accel="tcg", text=text))
    assert {c.name for c in no_argv.failed} == {"machine", "concerns"}, no_argv.why()
    argv = ("qemu-system-aarch64", "-machine", "virt-5.2,gic-version=3", "-device", "pcie-root-port,port=8,id=pci.1")
    no_accel = check(bug, Facts(version=V("5.2.0"), stage="boot", arch="aarch64", argv=argv, text=text))
    assert [c.name for c in no_accel.failed] == ["accel"] and "accelerator not known" in no_accel.why()
    assert check(bug, Facts(version=V("5.2.0"), stage="boot", arch="aarch64", accel="tcg", argv=argv,
                            text=text)).holds


def test_the_not_reproduced_path_uses_the_same_rule_with_the_accelerator(tmp_path: Path) -> None:
    db = tmp_path / "bugs.toml"
    db.write_text('[bugs.x]\ntitle = "t"\naffected = ["5.2.0", "5.2.0"]\nstages = ["migrate"]\n'
                  'reproduce = ["migrate"]\naccels = ["tcg"]\n'
                  'concerns = { devices = [{ failover_pair_id = "*" }], machine = "q35" }\n')
    bug = load_bugs(str(db))[0]
    facts = {"version": V("5.2.0"), "stage": "migrate", "side": "source", "arch": "x86_64", "argv": TEAM_Q35}
    assert check(bug, Facts(**facts, accel="tcg"), "expect").holds  # type: ignore[arg-type]
    kvm = check(bug, Facts(**facts, accel="kvm"), "expect")  # type: ignore[arg-type]
    assert [c.name for c in kvm.failed] == ["accel"]
    assert [c.name for c in check(bug, Facts(**{**facts, "stage": "boot"}, accel="tcg"), "expect").failed] == [
        "stage"]  # type: ignore[arg-type]


def test_expected_bugs_need_the_configuration_the_stage_the_side_and_the_hardware() -> None:
    v52 = {"version": V("5.2.0"), "arch": "x86_64", "accel": "tcg"}
    assert [b.id for b in expected_bugs(Facts(**v52, stage="migrate", side="source", argv=TEAM_Q35))] == [
        "pcie-native-hotplug-plug-read-as-unplug"]  # type: ignore[arg-type]
    assert expected_bugs(Facts(**v52, stage="migrate", side="destination", argv=TEAM_Q35)) == []  # type: ignore[arg-type]
    assert expected_bugs(Facts(**v52, stage="boot", side="source", argv=TEAM_Q35)) == []  # type: ignore[arg-type]
    assert expected_bugs(Facts(**v52, stage="migrate", side="source", argv=TEAM_Q35[:3])) == []  # type: ignore[arg-type]
    assert expected_bugs(Facts(version=V("7.2.22"), stage="migrate", side="source", arch="x86_64", accel="tcg",
                               argv=TEAM_Q35)) == []
    vf = {"version": V("4.2.0"), "stage": "migrate", "side": "source", "arch": "x86_64", "accel": "tcg",
          "argv": VF_Q35}
    assert "vfio-irqchip-notifier-unplug-segv" not in {b.id for b in expected_bugs(Facts(**vf))}  # type: ignore[arg-type]
    assert "vfio-irqchip-notifier-unplug-segv" in {b.id for b in expected_bugs(
        Facts(**vf, available=frozenset({"vfio"})))}  # type: ignore[arg-type]


def test_two_bugs_that_explain_one_failure_are_both_named_not_chosen_by_file_order(tmp_path: Path) -> None:
    entries = ['[bugs.broad]\ntitle = "b"\naffected = ["5.0.0", "6.0.0"]\nstages = ["migrate"]\n'
               'match.signal = ["SIGSEGV"]\n',
               '[bugs.narrow]\ntitle = "n"\naffected = ["5.0.0", "5.0.0"]\nstages = ["migrate"]\nside = "source"\n'
               'match.signal = ["SIGSEGV"]\nconcerns = { devices = [{ failover = "on" }] }\n']
    facts = Facts(version=V("5.0.0"), stage="migrate", side="source", arch="x86_64", accel="tcg", argv=TEAM_Q35,
                  signal="SIGSEGV")
    for order in (entries, entries[::-1]):
        db = tmp_path / f"bugs-{order[0][6:10]}.toml"
        db.write_text("\n".join(order))
        found = ranked(check(b, facts) for b in load_bugs(str(db)))
        assert [a.bug.id for a in found] == ["narrow", "broad"]  # the more specific first, in either file order
    real = explain_failure(Facts(version=V("5.0.0"), stage="migrate", side="source", peer=V("5.0.0"),
                                 arch="x86_64", accel="tcg", argv=TEAM_Q35, signal="SIGSEGV"))
    record = real.record()
    assert record is not None and record["id"] == "failover-migration-notifier-left"
    assert [b["id"] for b in record["also"]] == ["failover-unplug-standby-then-primary-crash"]


def test_a_migration_bug_needs_its_side_and_its_peer_version() -> None:
    """slirp's numbered sections (8.2+) break only an older destination, fed by an 8.2+ source."""
    slirp = "destination exit code 1: Unknown savevm section or instance 'slirp' 1. Make sure that ..."
    v72, v100 = V("7.2.22"), V("10.0.2")
    base = {"stage": "migrate", "arch": "x86_64", "accel": "tcg", "argv": TEAM_Q35, "text": slirp}
    assert explained(version=v72, peer=v100, side="destination", **base) == ["slirp-instance-id-backward-migration"]
    assert explained(version=v72, peer=v100, side="source", **base) == []
    assert explained(version=v72, peer=V("7.2.0"), side="destination", **base) == []
    assert explained(version=v100, peer=v72, side="destination", **base) == []


def test_native_hotplug_wait_is_not_taken_for_a_paused_guest() -> None:
    base = {"stage": "migrate", "side": "source", "arch": "x86_64", "accel": "tcg", "argv": TEAM_Q35}
    waited = "wait-unplug timeout: still in wait-unplug after 15 s; after migrate_cancel: ..."
    assert explained(version=V("5.2.0"), text=waited, **base) == ["pcie-native-hotplug-plug-read-as-unplug"]
    assert explained(version=V("7.2.22"), text=waited, **base) == []
    paused = "wait-unplug timeout: still in wait-unplug after 15 s with the guest paused; ..."
    for version in ("5.2.0", "7.2.22", "10.0.2"):
        assert explained(version=V(version), text=paused, **base) == ["failover-paused-guest"], version


def test_arm_tcg_bugs_need_tcg_aarch64_and_for_the_cpu_state_two_versions() -> None:
    text = "destination exit code 1: qemu-system-aarch64: error while loading state for instance 0x0 of device 'cpu'"
    v72, v100 = V("7.2.22"), V("10.0.2")
    base = {"version": v100, "stage": "migrate", "side": "destination", "text": text}
    assert explained(peer=v72, arch="aarch64", accel="tcg", **base) == ["arm-tcg-cpreg-cross-version"]
    assert explained(peer=v72, arch="aarch64", accel="kvm", **base) == []
    assert explained(peer=v100, arch="aarch64", accel="tcg", **base) == []
    assert explained(peer=v72, arch="x86_64", accel="tcg", **base) == []


def test_tcg_gicv3_without_its_needs_an_old_virt_machine_type() -> None:
    text = "QEMU did not start (exit code 1): -device pcie-root-port: MSI-X is not supported by interrupt controller"
    argv = ("qemu-system-aarch64", "-machine", "virt-5.2,gic-version=3", "-device", "pcie-root-port,port=8,id=pci.1")
    base = {"arch": "aarch64", "accel": "tcg", "text": text}
    assert explained(version=V("5.2.0"), stage="boot", argv=argv, **base) == ["arm-tcg-gicv3-no-its"]
    assert explained(version=V("7.2.22"), stage="migrate", side="source", peer=V("5.2.0"), argv=argv,
                     **base) == ["arm-tcg-gicv3-no-its"]  # pinned to virt-5.2 for 5.2: no TCG ITS either
    newer = tuple(a.replace("virt-5.2", "virt-7.2") for a in argv)
    assert explained(version=V("7.2.22"), stage="boot", argv=newer, **base) == []


def test_lost_tcg_dirty_pages_need_tcg_the_source_side_and_a_version_before_9_0() -> None:
    text = "destination RAM differs from the source's at the switch: 3 page(s) of 4096 bytes (0xf620000, ...)"
    v72 = V("7.2.22")
    base = {"stage": "migrate", "peer": v72, "side": "source", "arch": "x86_64", "argv": TEAM_Q35}
    assert explained(version=v72, accel="tcg", text=text, **base) == ["tcg-migration-lost-dirty-pages"]
    assert explained(version=v72, accel="kvm", text=text, **base) == []
    assert explained(version=V("10.0.2"), accel="tcg", text=text, **base) == []
    assert explained(version=v72, accel="tcg", text="guest kernel panic: Fatal exception in interrupt",
                     **base) == []  # a panic alone is not this bug's evidence


# ------------------------------------------------------------------------------------ concerns, static

def test_concerns_match_the_argv_not_the_case_name() -> None:
    argv = ["qemu", "-machine", "pc-q35-4.2,usb=off", "-device", '{"driver":"virtio-net-pci","failover":true,"id":"n"}',
            "-device", "vfio-pci,host=0000:03:07.1,id=hostdev0,failover_pair_id=n"]
    ids = {b.id for b in bugs_concerning(V("4.2.0"), argv, "x86_64")}
    assert {"vfio-irqchip-notifier-unplug-segv", "pcie-native-hotplug-plug-read-as-unplug"} <= ids
    pc = [a.replace("pc-q35-4.2", "pc-i440fx-4.2") for a in argv]
    assert "pcie-native-hotplug-plug-read-as-unplug" not in {b.id for b in bugs_concerning(V("4.2.0"), pc, "x86_64")}
    plain = [*argv[:3], "-device", "virtio-net-pci,id=n"]
    assert "vfio-irqchip-notifier-unplug-segv" not in {b.id for b in bugs_concerning(V("4.2.0"), plain, "x86_64")}


def test_static_flags_with_one_memo_across_argvs_are_the_rules() -> None:
    """bugs_concerning with one FlagMemo kept across many argvs (as the static stages keep it: -device tokens per
    string, the rule's verdict per bug, version, arch, machine type and package) flags exactly the bugs whose
    conditions hold by the rule (check) on each argv alone: no kept answer leaks from one argv to another."""
    from conformance.knownbugs.matcher import FlagMemo

    argvs = [VF_Q35, TEAM_Q35, PLAIN_Q35,
             tuple(a.replace("pc-q35-4.2", "pc-i440fx-4.2") for a in VF_Q35),
             ("qemu", "-machine", "pc-q35-7.2,usb=off", "-device", "pcie-root-port,id=p1", "-device", "-foo"),
             ("qemu", "-machine", '{"type":"pc-q35-7.2"}', "-device", '{"driver":"pcie-root-port","id":"p1"}'),
             ("qemu", "-machine", "pc-i440fx-7.1", "-device", "isa-vga,id=v", "-device", "isa-cirrus-vga"),
             ("qemu", "-machine", "pc-i440fx-2.4", "-device", "vmgenid,id=g", "-device", "virtio-blk-pci,id=d"),
             ("qemu", "-machine", "virt-6.1", "-device", "pcie-root-port,id=p1"),
             ("qemu", "-machine", "virt-7.2", "-device", "ioh3420,id=p1"),
             ("qemu", "-device", '{"driver":"virtio-net-pci","failover":true,"id":"n"}',
              "-device", "vfio-pci,failover_pair_id=n"),
             ("qemu", "-machine", "pc-q35-6.1", "-device", "e1000e,failover_pair_id=n"),
             ("qemu", "-machine", "pc-q35-4.2", "-device", "vfio-pci,id=x", "-device", "e1000e,failover_pair_id=n"),
             ("qemu",)]
    memo = FlagMemo()
    seen = 0
    for version in ("4.2.0", "6.1.0", "6.2.0", "7.2.22", "8.0.0", "9.1.0", "10.0.2"):
        for arch in ("x86_64", "aarch64", ""):
            for package in ("", "1:7.2+dfsg-7+deb12u18"):
                for argv in argvs:
                    facts = Facts(version=V(version), stage="", arch=arch, argv=argv, package=package)
                    want = [b.id for b in load_bugs() if b.concerns is not None and check(b, facts, "concern").holds]
                    assert [b.id for b in bugs_concerning(V(version), list(argv), arch, package, memo)] == want, \
                        (version, arch, package, argv)
                    assert [b.id for b in bugs_concerning(V(version), list(argv), arch, package)] == want
                    seen += bool(want)
    assert seen > 40  # the table meets bugs, not only their absence
    from conformance.knownbugs.matcher import _device_tokens

    for argv in argvs:  # the per-device token test is devices_match, bug by bug
        tokens = _device_tokens(list(argv), memo)
        devices = Facts(version=V("8.0.0"), stage="", argv=argv).devices
        for bug in load_bugs():
            if bug.concerns is not None:
                assert bug.concerns.devices_meet(tokens) == bug.concerns.devices_match(devices), (bug.id, argv)


def test_concerns_accept_any_of_a_list_and_json_only_devices() -> None:
    aer = next(b for b in load_bugs() if b.id == "pcie-aer-uncor-mask-migration")
    json_dd = next(b for b in load_bugs() if b.id == "device-json-breaks-device-deleted")
    for port in ("pcie-root-port", "ioh3420", "xio3130-downstream"):
        argv = ["qemu", "-machine", "pc-q35-7.2", "-device", f"{port},id=p"]
        assert check(aer, Facts(version=V("8.0.0"), stage="", argv=tuple(argv)), "concern").holds, port
    assert not check(aer, Facts(version=V("8.0.0"), stage="", argv=PLAIN_Q35), "concern").holds
    comma = ("qemu", "-machine", "pc-q35-6.2", "-device", "vmxnet3,id=p,failover_pair_id=n")
    as_json = ("qemu", "-machine", "pc-q35-6.2", "-device", '{"driver":"vmxnet3","id":"p","failover_pair_id":"n"}')
    assert not check(json_dd, Facts(version=V("6.2.0"), stage="", argv=comma), "concern").holds
    assert check(json_dd, Facts(version=V("6.2.0"), stage="", argv=as_json), "concern").holds


@pytest.mark.parametrize("toml", [
    '[bugs.x]\ntitle = "t"\naffected = ["4.2"]\n',
    '[bugs.x]\ntitle = "t"\naffected = ["4.2.0", "4.2.0"]\nside = "both"\n',
    '[bugs.x]\ntitle = "t"\naffected = ["4.2.0", "4.2.0"]\nconcerns = { device = [] }\n',
    '[bugs.x]\ntitle = "t"\naffected = ["4.2.0", "4.2.0"]\naccel = ["tcg"]\n',  # a typo of accels
    '[bugs.x]\ntitle = "t"\naffected = ["4.2.0", "4.2.0"]\nconcerns = { devices = [{ driver = [] }] }\n',
])
def test_a_bad_entry_is_a_clear_error(tmp_path: Path, toml: str) -> None:
    bad = tmp_path / "bugs.toml"
    bad.write_text(toml)
    with pytest.raises(CaseError, match="known bug x: bad entry"):
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


def test_static_stage_flags_the_gicv3_bug_only_on_old_virt_machine_types() -> None:
    old = {b["id"] for b in _argv_outcome("controllers-pcie-xhci", "4.2.0:aarch64").known_bugs}
    new = {b["id"] for b in _argv_outcome("controllers-pcie-xhci", "7.2.22:aarch64").known_bugs}
    assert "arm-tcg-gicv3-no-its" in old and "arm-tcg-gicv3-no-its" not in new


# ------------------------------------------------------------------------------------- lint the entries

TITLE_PROMISES = [
    (re.compile(r"\bTCG\b"), "accels = [\"tcg\"]", lambda b: b.accels == ("tcg",)),
    (re.compile(r"cross-version|\bbetween\b.+\band\b|<->"), "cross_version = true",
     lambda b: b.cross_version),
    (re.compile(r"\b(pc-[\w*.-]+|q35|i440fx|virt-\d[\d.]*|machine type)"), "concerns.machine",
     lambda b: b.concerns is not None and b.concerns.machine is not None),
]


@pytest.mark.parametrize("bug", load_bugs(), ids=lambda b: b.id)
def test_a_title_that_promises_a_condition_encodes_it(bug) -> None:  # type: ignore[no-untyped-def]
    for said, field, encoded in TITLE_PROMISES:
        if said.search(bug.title):
            assert encoded(bug), f"{bug.id}: its title says {said.search(bug.title)[0]!r} but it lacks {field}"


def test_the_lint_catches_a_title_without_its_condition(tmp_path: Path) -> None:
    db = tmp_path / "bugs.toml"
    db.write_text('[bugs.x]\ntitle = "TCG: migration between 7.2 and 8.0 with pc-q35-7.2 fails"\n'
                  'affected = ["7.2.0", "7.2.0"]\n')
    bug = load_bugs(str(db))[0]
    assert [f for said, f, encoded in TITLE_PROMISES if said.search(bug.title) and not encoded(bug)] == [
        'accels = ["tcg"]', "cross_version = true", "concerns.machine"]


# ------------------------------------------------------------------------- recorded evidence, per bug

FOLDERS = sorted(p for p in EVIDENCE.iterdir() if p.is_dir())


def test_every_bug_has_an_evidence_folder() -> None:
    assert {p.name for p in FOLDERS} == {b.id for b in load_bugs()}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_evidence_is_explained_and_near_misses_are_not(folder: Path) -> None:
    """Each record of a run, re-matched with today's database, is explained by exactly the bugs it names;
    the folder's bug explains its real (or upstream) failures and none of its near misses."""
    records = list(read_records(folder / "results.jsonl"))
    assert (folder / "README.md").is_file()
    own = [r for r in records if not r.details["evidence"].startswith("near miss")]
    near = [r for r in records if r.details["evidence"].startswith("near miss")]
    assert own and near, f"{folder.name}: needs an explained record and a near miss"
    for r in records:
        named = r.details.get("known_bug") or {}
        want = [named["id"], *[a["id"] for a in named.get("also", [])]] if named else []
        got = retriage(r, folder)
        assert [a.bug.id for a in got.bugs] == want, f"{r.details['evidence']}: {got.why}"
        sides = list(facts_of(r, folder))
        assert all(f.argv is not None for _, f in sides) or "no argv" in r.details["evidence"], r.details
    assert all(folder.name in [a.bug.id for a in retriage(r, folder).bugs] for r in own)
    assert not any(folder.name in [a.bug.id for a in retriage(r, folder).bugs] for r in near)


# --------------------------------------------------------------------------------- qemu-conformance bugs

def test_bugs_list_filters_by_version_and_arch(capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main

    assert main(["bugs", "list", "--version", "7.2.22", "--arch", "x86_64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["ID", "AFFECTED", "STAGES"]
    ids = {line.split()[0] for line in out[1:]}
    assert "tcg-migration-lost-dirty-pages" in ids and "slirp-instance-id-backward-migration" in ids
    assert "arm-tcg-cpreg-cross-version" not in ids and "pcie-aer-uncor-mask-migration" not in ids
    assert main(["bugs", "list", "--version", "seven"]) == 2


def _record(case: str, verdict: str, reason: str, qemu: str, peer: str | None, artifacts: dict[str, str],
            **details: object) -> str:
    build = {"path": "qemu-system-x86_64", "version": qemu, "package": "", "arch": "x86_64"}
    return json.dumps({"case": case, "stage": "migrate" if peer else "boot", "verdict": verdict, "reason": reason,
                       "arch": "x86_64", "qemu": build, "peer": {**build, "version": peer} if peer else None,
                       "accel": "tcg", "duration_s": 1.0, "artifacts": artifacts, "details": details})


def test_bugs_explain_rematches_earlier_results_with_their_argv_and_logs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main

    run = tmp_path / "run"
    (run / "live").mkdir(parents=True)
    argv = ["qemu-system-x86_64", "-machine", "pc-q35-7.2", "-device", "pcie-root-port,id=pci.1",
            "-netdev", "user,id=a", "-device", "virtio-net-pci,failover=on,id=n,netdev=a"]
    (run / "live" / "argv.json").write_text(json.dumps(argv))
    (run / "live" / "stderr.log").write_text("warning: x\nqemu-system-x86_64: Unknown savevm section or instance "
                                              "'slirp' 1. Make sure that your current VM setup matches\n")
    old_bug = {"id": "slirp-instance-id-backward-migration", "title": "old title (with: colons)", "fixed": "f",
               "affected": "0.0.0..8.1.99", "concerns": ""}
    arts = {"source-argv": "live/argv.json", "destination-argv": "live/argv.json",
            "destination-stderr": "live/stderr.log"}
    lines = [
        _record("teaming-q35", "known-bug", "known bug slirp-instance-id-backward-migration (old title (with: "
                "colons); fixed: f): migration failed on the source", "10.0.2", "7.2.22", arts, known_bug=old_bug,
                exits={"destination": "exit code 1"}),
        _record("teaming-q35", "fail", "migration failed on the source", "7.2.22", "7.2.22", arts),  # near miss
        _record("q35-minimal", "fail", "destination: load of migration failed", "8.0.0", "8.0.0",
                {"source-argv": "live/missing.json"}),
        _record("q35-minimal", "pass", "booted", "7.2.22", None, {}),
        _record("q35-minimal", "skip", "no guest", "7.2.22", None, {}),
    ]
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["bugs", "explain", str(run / "results.jsonl")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4, out  # every result but the pass
    assert out[0].startswith("slirp-instance-id-backward-migration  teaming-q35 migrate 10.0.2 -> 7.2.22")
    assert "destination: " in out[0] and "peer 10.0.2 in 8.2.0..99.0.0" in out[0]
    assert out[1].startswith("-  teaming-q35 migrate 7.2.22 -> 7.2.22") and "peer 7.2.22 not in" in out[1]
    assert out[2].startswith("-  q35-minimal migrate 8.0.0 -> 8.0.0")
    assert out[3].startswith("-  q35-minimal boot 7.2.22") and "skip is not a QEMU failure" in out[3]
    assert main(["bugs", "explain", "--json", str(run / "results.jsonl")]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {k: objects[0][k] for k in ("case", "stage", "qemu", "peer", "bug")} == {
        "case": "teaming-q35", "stage": "migrate", "qemu": "10.0.2", "peer": "7.2.22",
        "bug": "slirp-instance-id-backward-migration"}
    assert [o["bug"] for o in objects] == ["slirp-instance-id-backward-migration", None, None, None]
    assert all(isinstance(o["why"], str) and o["why"] for o in objects)


def test_bugs_explain_says_which_file_and_line_is_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main

    bad = tmp_path / "results.jsonl"
    bad.write_text(_record("q35-minimal", "fail", "x", "7.2.22", None, {}) + "\n{not json\n")
    assert main(["bugs", "explain", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}" in err and "2" in err and "not a stage result record" in err
    assert main(["bugs", "explain", str(tmp_path / "none.jsonl")]) == 2


def test_a_result_with_two_bugs_names_both_in_the_report_and_junit() -> None:
    """details.known_bug is the primary bug's record, its ``also`` the others (live/boot.py writes them)."""
    from lxml import etree

    from conformance.report.model import bugs_of
    from conformance.results.junit import to_junit
    from conformance.results.records import QemuBuild, StageResult

    record = explain_failure(Facts(version=V("5.0.0"), stage="migrate", side="source", peer=V("5.0.0"),
                                   arch="x86_64", accel="tcg", argv=TEAM_Q35, signal="SIGSEGV")).record()
    q50 = QemuBuild("qemu-system-x86_64", "5.0.0", "", "x86_64")
    result = StageResult("teaming-q35", "migrate", "known-bug", "known bug ...", "x86_64", q50, peer=q50,
                         details={"known_bug": record})
    assert [(how, bug["id"]) for how, bug in bugs_of(result)] == [
        ("reproduced", "failover-migration-notifier-left"),
        ("reproduced", "failover-unplug-standby-then-primary-crash")]
    props = etree.fromstring(to_junit([result])).findall(".//property[@name='known-bug']")
    assert [p.get("value").split(": ")[1].split(" ")[0] for p in props] == [
        "failover-migration-notifier-left", "failover-unplug-standby-then-primary-crash"]


def test_the_live_explain_step_names_every_bug_in_its_reason_and_record() -> None:
    from types import SimpleNamespace

    from conformance.live.boot import explain

    caps = SimpleNamespace(version=V("5.2.0"), arch="x86_64", package="")
    reason = ("wait-unplug timeout: still in wait-unplug after 15 s with the guest paused; after migrate_cancel: "
              "the primary hostdev0 was not re-plugged")
    details: dict = {}
    verdict, why = explain("fail", reason, [], caps, "migrate", details, peer=V("5.2.0"),  # type: ignore[arg-type]
                           side="source", accel="tcg", argv=list(TEAM_Q35))
    ids = [details["known_bug"]["id"], *[b["id"] for b in details["known_bug"]["also"]]]
    assert verdict == "known-bug" and sorted(ids) == ["failover-cancel-in-wait-unplug", "failover-paused-guest"]
    assert why.startswith(f"known bug {ids[0]} (") and f"; also explained by {ids[1]}: {reason}" in why


# ------------------------------------------------------------------- a vmstate row with several hazards

def _row(folder: str, sub: str) -> tuple[StageResult, Path]:
    """The real vmstate record of an evidence folder whose argvs are in ``sub``."""
    path = EVIDENCE / folder
    return next(r for r in read_records(path / "results.jsonl")
                if r.stage == "vmstate" and r.artifacts.get("source-argv", "").startswith(sub + "/")), path


def test_a_vmstate_row_explained_by_two_entries_names_both_in_the_stage_and_the_rematch() -> None:
    """pc-misc-rich 5.2.0 -> 7.2.22 under pc-i440fx-2.4 (issue 17's sweep): 5.2.0 cannot plug vmgenid nor
    vmcoreinfo (vmgenid-needs-fw-cfg-dma) and i2c-ddc's EDID resolution differs (the EDID entry). The stage
    names both, the primary in the record and the other under ``also`` (what the report and JUnit list);
    ``bugs explain`` gives the same two, in the same order."""
    from conformance.caps.fixture import read_fixture
    from conformance.vmstate import explain_hazards
    from tests.helpers import ROOT

    record, folder = _row("vmgenid-needs-fw-cfg-dma", "vmstate-pc-misc-rich")
    assert [a.bug.id for a in retriage(record, folder).bugs] == [
        "vmgenid-needs-fw-cfg-dma", "edid-default-resolution-changed-no-compat"]
    old, new = (read_fixture(ROOT / "capsdata" / f"qemu-{v}-x86_64.xml") for v in ("5.2.0", "7.2.22"))
    pinned = [json.loads((folder / "vmstate-pc-misc-rich" / f"{side}-argv.json").read_text())
              for side in ("source", "destination")]
    bad = {d: record.details["devices"][d] for d in ("vmgenid", "vmcoreinfo", "i2c-ddc")}
    details: dict = {}
    verdict, reason = explain_hazards(bad, "whole", old, new, pinned, details)
    assert verdict == "known-bug" and details["known_bug"]["id"] == "vmgenid-needs-fw-cfg-dma"
    assert [b["id"] for b in details["known_bug"]["also"]] == ["edid-default-resolution-changed-no-compat"]
    assert "also explained by edid-default-resolution-changed-no-compat" in reason
    assert details["explained"] == {"vmgenid": "vmgenid-needs-fw-cfg-dma", "vmcoreinfo": "vmgenid-needs-fw-cfg-dma",
                                    "i2c-ddc": "edid-default-resolution-changed-no-compat"}
    # one more device's hazard that no entry explains: the row is a fail, in the stage and in the re-match
    other = "[P1] x-made-up: on on 5.2.0-x86_64, off on 7.2.22-x86_64 under pc-i440fx-2.4"
    details = {}
    verdict, reason = explain_hazards({**bad, "virtio-rng-pci": other}, "whole", old, new, pinned, details)
    assert verdict == "fail" and "known_bug" not in details and reason.startswith("virtio-rng-pci: [P1] x-made-up")
    more = dataclasses.replace(record, verdict="fail",
                               details={**record.details, "devices": {**bad, "virtio-rng-pci": other}})
    got = retriage(more, folder)
    assert got.bugs == [] and got.why.startswith("hazards of virtio-rng-pci explained by no known bug")


def test_the_fw_cfg_dma_entry_explains_each_device_that_refuses_without_it() -> None:
    """vmgenid, vmcoreinfo and ramfb each refuse to realize without fw_cfg DMA (one cause: hw_compat_2_4 turns
    it off); the entry explains each one's refusal, at boot and in the vmstate stage, under 2.4 and not 2.5."""
    for device, text in (("vmgenid", "vmgenid requires DMA write support in fw_cfg, which this machine type does "
                                     "not provide"),
                         ("vmcoreinfo", "vmcoreinfo device requires fw_cfg with DMA"),
                         ("ramfb", "ramfb device requires fw_cfg with DMA")):
        for machine, want in (("pc-i440fx-2.4", ["vmgenid-needs-fw-cfg-dma"]), ("pc-q35-2.5", [])):
            argv = ("qemu", "-machine", machine, "-device", f"{device},id=d0")
            for stage, reason in (("boot", f"QEMU did not start (exit code 1): -device {device}: {text}"),
                                  ("vmstate", f"{device}: 10.0.2-x86_64 cannot plug it under {machine}: {text}")):
                assert explained(version=V("10.0.2"), stage=stage, arch="x86_64", argv=argv, text=reason) == want
