"""The static prediction's rules (conformance/vmstate.py) on recorded dump sections and small property sets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.vmstate import (
    CACHE_FORMAT,
    COMPATIBLE,
    CONDITIONAL,
    SUBSECTION_GATES,
    MachineProps,
    Side,
    _placeholder_owner,
    compare_entry,
    compare_properties,
    gate_subsections,
    machine_family,
    parse_qtree,
    predict,
    same_build,
    split_conditional,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "vmstate" / "x86_64-sections.json"
DUMPS: dict[str, dict[str, Any]] = json.loads(DATA.read_text())


def test_e1000e_unused_padding_of_an_array_lines_up_between_7_2_and_10_0() -> None:
    """10.0 replaced 7.2's 5-byte eitr_intr_pending array by 5 bytes of padding: the dump gives the element
    size (1) only, and the fields after it line up by name, so the wire is the same both ways."""
    for src, dst in (("72", "100"), ("100", "72"), ("52", "100")):
        assert compare_entry("e1000e", DUMPS[src]["e1000e"], DUMPS[dst]) == [], (src, dst)


def test_a_known_rename_is_compatible_and_an_unknown_one_is_a_hazard() -> None:
    assert compare_entry("hpet", DUMPS["72"]["hpet"], DUMPS["100"]) == []  # num_timers -> num_timers_save
    renamed = copy.deepcopy(DUMPS["100"])
    fields = renamed["hpet"]["Description"]["Fields"]
    fields[0] = {**fields[0], "field": "something_else"}
    hazards = compare_entry("hpet", DUMPS["72"]["hpet"], renamed)
    assert len(hazards) == 1 and "another name" in hazards[0]


def test_versions_and_sizes() -> None:
    # 10.0's esp section is version 2; 5.2 takes at most 1: backward fails, forward loads
    assert compare_entry("sysbus-esp", DUMPS["100"]["sysbus-esp"], DUMPS["52"]) == \
        ["[V2] sysbusespscsi: version 2 on the source, the destination takes at most 1"]
    grown = copy.deepcopy(DUMPS["72"])
    grown["e1000e"]["Description"]["Fields"][2]["size"] = 8  # ioaddr
    assert "is 4 bytes on the source" in compare_entry("e1000e", DUMPS["72"]["e1000e"], grown)[0]
    too_new = copy.deepcopy(DUMPS["72"])
    too_new["e1000e"]["Description"]["minimum_version_id"] = 2
    assert "takes 2 or newer" in compare_entry("e1000e", DUMPS["72"]["e1000e"], too_new)[0]


def test_a_field_the_destination_reads_but_the_source_does_not_send() -> None:
    """7.2 -> 10.0 esp: 10.0 reads drq_state unconditionally in its nested esp struct (version 7), which 7.2
    (version 6) does not send; the nested struct's version is not on the wire."""
    hazards = compare_entry("sysbus-esp", DUMPS["72"]["sysbus-esp"], DUMPS["100"])
    assert hazards == ["[V3] sysbusespscsi: the destination reads esp.drq_state, which the source does not send"]


def test_esp_5_2_loads_on_7_2_and_10_0s_drq_state_alone_is_the_hazard() -> None:
    """Live (docs/machines.md, second session): every 5.2.0 -> 7.2.22 migration of q35-storage-rich and
    pc-storage-rich (am53c974, dc390: the esp struct this section nests) loaded, every q35 and pc type; every
    5.2.0 -> 10.0.2 one broke on 10.0's unguarded drq_state. 6.0 kept the old fields for version-4 esp
    streams as mig_* (V4: not a rename of meaning) and reads its new ones, the Fifo8 structs included, only
    behind a version test (V3: conditional)."""
    assert compare_entry("sysbus-esp", DUMPS["52"]["esp"], DUMPS["72"]) == []
    assert compare_entry("sysbus-esp", DUMPS["52"]["esp"], DUMPS["100"]) == \
        ["[V3] sysbusespscsi: the destination reads esp.drq_state, which the source does not send"]


def test_a_struct_behind_a_run_time_test_is_conditional_to_its_last_field() -> None:
    """The leaves of a struct field with field_exists are conditional; the same struct without it is read."""
    dst = copy.deepcopy(DUMPS["72"])
    esp = next(f for f in dst["sysbus-esp"]["Description"]["Fields"] if f.get("field") == "esp")["Description"]
    fifo = next(f for f in esp["Fields"] if f.get("field") == "fifo")
    assert fifo["field_exists"] and isinstance(fifo["Description"], dict)
    assert compare_entry("sysbus-esp", DUMPS["52"]["esp"], dst) == []
    fifo["field_exists"] = False
    hazards = compare_entry("sysbus-esp", DUMPS["52"]["esp"], dst)
    assert hazards == ["[V3] sysbusespscsi: the destination reads esp.fifo.data, esp.fifo.head, esp.fifo.num, "
                       "which the source does not send"], hazards


def test_a_missing_section_and_a_missing_subsection() -> None:
    assert compare_entry("virtio-rng-device", DUMPS["72"]["virtio-rng-device"], {}) == \
        ["[V1] section virtio-rng: the destination has no state description for virtio-rng-device"]
    with_sub = copy.deepcopy(DUMPS["72"]["hpet"])
    with_sub["Description"]["Subsections"] = [{"name": "hpet/new", "version_id": 1, "minimum_version_id": 1,
                                              "Fields": []}]
    hazards = compare_entry("hpet", with_sub, DUMPS["72"])
    assert hazards and "subsection hpet/new is unknown to the destination" in hazards[-1]


def test_property_rules() -> None:
    kw: dict[str, Any] = {"machine": "pc-q35-7.1", "src_label": "A", "dst_label": "B", "newer": "B"}
    # P1: the 7.2.0 virtio-rng-pci break, as values: 0 on the fixed build, 2 on the broken one
    assert compare_properties({"vectors": "0"}, {"vectors": "2"}, {}, {}, **kw) == \
        ["[P1] vectors: 0 on A, 2 on B under pc-q35-7.1"]
    assert compare_properties({"rombar": "1"}, {"rombar": "-1"}, {}, {}, **kw) == []  # equivalent spellings
    assert compare_properties({"multifunction": "on"}, {"multifunction": "true"}, {}, {}, **kw) == []
    # P2: a new switch, on as under the newest type: hazard; pinned off by compat, or a number: fine
    assert compare_properties({}, {"x-new": "true"}, {}, {"x-new": "true"}, **kw)[0].startswith("[P2] x-new: only B")
    assert compare_properties({}, {"x-new": "false"}, {}, {"x-new": "true"}, **kw) == []
    assert compare_properties({}, {"irq": "8"}, {}, {"irq": "8"}, **kw) == []
    # P3: a property the newer build removed, pinned under this type by the older: hazard
    removed = compare_properties({"x-old": "false"}, {}, {"x-old": "true"}, {}, **kw)
    assert removed[0].startswith("[P3] x-old: A sets it")
    assert compare_properties({"x-old": "true"}, {}, {"x-old": "true"}, {}, **kw) == []
    # not compared: backend names and per-instance identities
    assert compare_properties({"netdev": '"a"', "mac": "1"}, {"netdev": '"b"', "mac": "2"}, {}, {}, **kw) == []


def test_intel_iommus_dma_translation_on_is_what_5_2_did() -> None:
    """P2 on live evidence: intel-iommu's dma-translation (7.2.22 and 10.0.2 have it, 5.2.0 not) reads true under
    every q35 type as under the newest; the 5.2.0 <-> 7.2.22 and 10.0.2 migrations of q35-misc-rich that
    carried it passed or broke for another reason (fw_cfg slots, vmgenid, the 10.0 TCG abort). True is DMA
    remapping, which 5.2.0 always did: no hazard. The same reading of a switch with no such evidence stays one."""
    kw: dict[str, Any] = {"machine": "pc-q35-2.11", "src_label": "5.2.0-x86_64", "dst_label": "7.2.22-x86_64",
                          "newer": "7.2.22-x86_64"}
    iommu = {"intremap": "false", "aw-bits": "39"}
    assert compare_properties(iommu, {**iommu, "dma-translation": "true"}, iommu,
                              {**iommu, "dma-translation": "true"}, **kw) == []
    hazards = compare_properties(iommu, {**iommu, "x-switch": "true"}, iommu, {**iommu, "x-switch": "true"}, **kw)
    assert len(hazards) == 1 and hazards[0].startswith("[P2] x-switch: only 7.2.22-x86_64 has it")


def test_one_build_with_itself_cannot_start_where_its_machine_type_refuses_a_device() -> None:
    """Live (docs/machines.md): 5.2.0 with itself under pc-q35-2.4, q35-storage-rich, failed to start ("Please set
    scsi=off ...", virtio-blk-scsi-compat-refuses-virtio-1) and q35-misc-rich's vmgenid needs fw_cfg DMA, which
    2.4 turns off; both plug under pc-q35-5.2. A 9p device refused under every type (no fsdev: the probe's
    placeholder, not the machine type) stays compatible."""
    refusals = {"virtio-blk-pci-transitional": "Please set scsi=off for virtio-blk devices in order to use virtio 1.0",
                "vmgenid": "vmgenid requires DMA write support in fw_cfg, which this machine type does not provide"}
    nine = {"virtio-9p-pci": {"error": "9pfs device couldn't find fsdev with the id = NULL"}}
    facts = {"pc-q35-2.4": MachineProps("pc-q35-2.4", {**{k: {"error": v} for k, v in refusals.items()}, **nine,
                                                       "e1000e": {"props": {}}}),
             "pc-q35-5.2": MachineProps("pc-q35-5.2", {"virtio-blk-pci-transitional": {"props": {}},
                                                       "vmgenid": {"props": {}}, "e1000e": {"props": {}}, **nine})}
    side = Side(Path("qemu"), "k", "5.2.0-x86_64", "x86_64", (5, 2, 0), {}, lambda m, _types: facts[m],
                lambda _m: "pc-q35-5.2")
    kinds = ["virtio-blk-pci-transitional", "vmgenid", "virtio-9p-pci", "e1000e"]
    got = same_build(side, "pc-q35-2.4", kinds)
    assert got == {**{k: f"5.2.0-x86_64 cannot plug it under pc-q35-2.4: {v}" for k, v in refusals.items()},
                   "virtio-9p-pci": COMPATIBLE, "e1000e": COMPATIBLE}
    assert set(same_build(side, "pc-q35-5.2", kinds).values()) == {COMPATIBLE}
    # the same refusal on the source of a cross pair: 5.2.0 -> 7.2.22 under pc-q35-2.4 (live: known bug, the
    # source did not start), whatever the destination says
    other = Side(Path("qemu72"), "k72", "7.2.22-x86_64", "x86_64", (7, 2, 22), {}, lambda m, _types: facts[m],
                 lambda _m: "pc-q35-5.2")
    argv = ["qemu-system-x86_64", "-device", "virtio-blk-pci-transitional,id=d0", "-device", "e1000e,id=n0"]
    assert predict(side, other, "pc-q35-2.4", argv, argv) == {
        "virtio-blk-pci-transitional": f"5.2.0-x86_64 cannot plug it under pc-q35-2.4: "
                                       f"{refusals['virtio-blk-pci-transitional']}", "e1000e": COMPATIBLE}


def test_parse_qtree_nests_devices_under_their_buses() -> None:
    text = """bus: main-system-bus
  type System
  dev: q35-pcihost, id ""
    MCFG = 2952790016 (0xb0000000)
    bus: pcie.0
      type PCIE
      dev: virtio-rng-pci, id "cov0"
        vectors = 0 (0x0)
        disable-legacy = "off"
        class Class 00ff, addr 00:01.0, pci id 1af4:1005 (sub 1af4:0004)
        bus: virtio-bus
          type virtio-pci-bus
          dev: virtio-rng-device, id ""
            period = 65536 (0x10000)
      dev: ICH9-SMB, id ""
        addr = 1f.3
"""
    (host,) = parse_qtree(text)
    assert host.type == "q35-pcihost" and host.props == {"MCFG": "2952790016"}
    rng, smb = host.children
    assert rng.id == "cov0" and rng.props == {"vectors": "0", "disable-legacy": '"off"'}
    assert [d.type for d in rng.descendants()] == ["virtio-rng-device"] and smb.props == {"addr": "1f.3"}


def test_a_renamed_inverted_property_is_one_property() -> None:
    """Evidence (read back and live): under pc-q35-6.1, 7.2.22's pcie-root-port has x-native-hotplug=false and
    10.0.2's has x-do-not-expose-native-hotplug-cap=true; q35-minimal migrated 7.2 <-> 10.0 there both ways.
    The first rule (P3) predicted a hazard; the rename rule keeps them one property."""
    kw: dict[str, Any] = {"machine": "pc-q35-6.1", "src_label": "7.2", "dst_label": "10.0", "newer": "10.0"}
    old = {"hotplug": "true", "x-native-hotplug": "false"}
    new = {"hotplug": "true", "x-do-not-expose-native-hotplug-cap": "true"}
    old_newest = {"hotplug": "true", "x-native-hotplug": "true"}
    new_newest = {"hotplug": "true", "x-do-not-expose-native-hotplug-cap": "false"}
    assert compare_properties(old, new, old_newest, new_newest, **kw) == []
    assert compare_properties(new, old, new_newest, old_newest, **{**kw, "src_label": "10.0", "dst_label": "7.2"}) == []
    wrong = {"hotplug": "true", "x-do-not-expose-native-hotplug-cap": "false"}
    assert compare_properties(old, wrong, old_newest, new_newest, **kw) == [
        "[P1] x-do-not-expose-native-hotplug-cap: true on 7.2, false on 10.0 under pc-q35-6.1"]


def test_run_refuses_vmstate_on_stored_fixtures(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """vmstate asks the builds themselves: with --caps and no --qemu it is refused in one line (exit 2)."""
    from conformance.cli import main

    assert main(["run", "--stages", "vmstate", "--caps", "7.2:x86_64", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "vmstate cannot run without a QEMU binary" in err and "--stages parse,argv" in err


def test_every_case_that_migrates_is_predicted() -> None:
    """cases.toml: a case that migrates lists vmstate too, so each migration has its prediction beside it."""
    from conformance.cases import load_catalogue

    for case in load_catalogue().cases.values():
        assert ("vmstate" in case.stages) == ("migrate" in case.stages), case.name


def test_values_the_probe_chose_or_spelt_differently_are_not_hazards() -> None:
    """Seen in the sweep: megasas' sas_address follows the probe's PCI placement; 10.0 prints usb-storage's
    block sizes as 0 ('the backend's'); intel-iommu's fs1gp needs first-stage translation (x-flts) on."""
    kw: dict[str, Any] = {"machine": "pc-q35-7.2", "src_label": "7.2", "dst_label": "10.0", "newer": "10.0"}
    assert compare_properties({"sas_address": "1"}, {"sas_address": "2"}, {}, {}, **kw) == []
    assert compare_properties({"logical_block_size": "512"}, {"logical_block_size": "0"}, {}, {}, **kw) == []
    assert compare_properties({}, {"fs1gp": "true", "x-flts": "false"}, {}, {"fs1gp": "true"}, **kw) == []
    assert compare_properties({}, {"fs1gp": "true", "x-flts": "true"}, {}, {"fs1gp": "true"}, **kw)


def test_a_subsection_the_guest_decides_to_send_is_conditional() -> None:
    """The live evidence (10.0.2 -> 7.2.22, 9 migrations through): i8259/ltim is sent only when the guest
    programs the PIC level-triggered, which Linux does not. The dump alone says 'hazard if sent'; the gate
    table makes it a warning naming the subsection, and the device compatible."""
    raw = compare_entry("isa-i8259", DUMPS["100"]["isa-i8259"], DUMPS["72"])
    assert raw == ["[V5] i8259: subsection i8259/ltim is unknown to the destination (the source sends it when its "
                   "test holds at run time)"]
    assert compare_entry("isa-i8259", DUMPS["72"]["isa-i8259"], DUMPS["100"]) == []  # forward: optional on the wire
    gated = gate_subsections(raw, "isa-i8259", {})
    assert CONDITIONAL in gated[0] and "ICW1" in gated[0]
    devices, notes = split_conditional({"isa-i8259": "; ".join(gated), "e1000e": COMPATIBLE})
    assert devices == {"isa-i8259": COMPATIBLE, "e1000e": COMPATIBLE}
    assert "i8259/ltim" in notes["isa-i8259"]


def test_a_subsection_a_property_gates_follows_the_value_read_under_the_machine_type() -> None:
    """virtio-gpu/blob is sent only with the device's blob property on (off by default and in the live case,
    whose 10.0 -> 7.2 migrations went through): off is conditional, on stays a hazard naming the value."""
    raw = compare_entry("virtio-gpu-device", DUMPS["100"]["virtio-gpu-device"], DUMPS["72"])
    assert len(raw) == 1 and "subsection virtio-gpu/blob is unknown" in raw[0]
    off = gate_subsections(raw, "virtio-gpu-pci", {"blob": "false", "max_outputs": "1"})
    assert CONDITIONAL in off[0] and "blob on, false here" in off[0]
    on = gate_subsections(raw, "virtio-gpu-pci", {"blob": "on"})
    assert CONDITIONAL not in on[0] and on[0].endswith("(sent: blob is true here)")
    assert gate_subsections(raw, "virtio-gpu-pci", {}) == [raw[0] + " (sent: blob is ? here)"]  # unread: a hazard
    devices, notes = split_conditional({"virtio-gpu-pci": "; ".join([*off, "[P1] xres: 1280 on A, 1024 on B"])})
    assert devices == {"virtio-gpu-pci": "[P1] xres: 1280 on A, 1024 on B"} and "virtio-gpu/blob" in notes[
        "virtio-gpu-pci"]


def test_a_subsection_only_another_type_sends_and_one_no_gate_is_known_for() -> None:
    ext = "[V5] sd-card: subsection sd-card/ext_csd_modes-state is unknown to the destination (the source ...)"
    assert CONDITIONAL in gate_subsections([ext], "sd-card", {})[0]
    assert gate_subsections([ext], "emmc", {}) == [ext]
    other = "[V5] hpet: subsection hpet/new is unknown to the destination (the source sends it ...)"
    assert gate_subsections([other, "[V3] x: y"], "hpet", {}) == [other, "[V3] x: y"]
    assert all(gate.source.startswith("hw/") for gate in SUBSECTION_GATES.values())


def test_a_placeholder_names_its_owner_and_families_share_refusals() -> None:
    stderr = ("qemu-system-x86_64: -device ipmi-bmc-sim,id=vmsb1: savevm_state_handler_insert: Detected duplicate "
              "SaveStateEntry")
    assert _placeholder_owner(stderr, ["ipmi-bmc-sim", "pci-ipmi-kcs"]) == "pci-ipmi-kcs"
    assert _placeholder_owner("-device e1000,id=cov0: refused\n", ["e1000"]) is None
    assert [machine_family(m) for m in ("pc-q35-7.2", "pc-i440fx-2.12", "virt-10.0", "q35")] == \
        ["pc-q35", "pc-i440fx", "virt", "q35"]


def test_a_clash_qemu_names_no_device_for_is_bisected_once_and_learnt(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """5.2 aborts ('RAMBlock "vga.vram" already registered') when two VGA-class devices meet, naming neither:
    the shortest failing prefix ends at the second one, which then goes a level up for the next machine type
    (a QEMU stand-in that refuses exactly that pair; no real QEMU here)."""
    import conformance.vmstate as vm
    from conformance.qemu.process import Exit, LaunchFailed

    started: list[list[str]] = []

    class Paused:
        qmp = None

        def stop(self) -> None:
            pass

    def fake_paused(_binary: Path, _machine: str, _folder: Path, args: list[str], name: str = "",
                    **_: object) -> Paused:
        devices = [a.split(",")[0] for i, a in enumerate(args) if i and args[i - 1] == "-device"]
        started.append(devices)
        if {"VGA", "cirrus-vga"} <= set(devices):
            raise LaunchFailed(name, Exit(1), [], 'RAMBlock "vga.vram" already registered, abort!\n')
        return Paused()

    monkeypatch.setattr(vm, "paused", fake_paused)
    learned = vm._Learned(buses={})
    batch = ["e1000", "VGA", "rtl8139", "virtio-net-pci", "cirrus-vga", "pcnet", "ne2k_pci", "i82559er"]
    assert vm._first_failing(Path("qemu"), "pc-i440fx-5.2", batch, tmp_path, learned) == "cirrus-vga"
    assert len(started) <= 3, "bisection: log2(8) starts"
    assert vm._first_failing(Path("qemu"), "pc-i440fx-5.2", ["VGA"], tmp_path, learned) is None


def test_a_known_bug_explains_its_own_hazard_only() -> None:
    """Each device's hazard is matched on its own: a known bug of one device (pvpanic's events default) must
    not turn a result with another device's unexplained hazard into known-bug."""
    import json

    from conformance.caps.fixture import read_fixture
    from conformance.vmstate import explain_hazards
    from tests.helpers import DATA, ROOT

    old, new = (read_fixture(ROOT / "capsdata" / f"qemu-{v}-x86_64.xml") for v in ("7.2.22", "10.0.2"))
    folder = DATA / "knownbugs" / "pvpanic-shutdown-event-no-compat" / "explained"
    pinned = [json.loads((folder / f"{side}-argv.json").read_text()) for side in ("source", "destination")]
    pvpanic = "[P1] events: 3 on 7.2.22-x86_64, 7 on 10.0.2-x86_64 under pc-q35-7.2"
    other = "[P1] x-made-up: on on 7.2.22-x86_64, off on 10.0.2-x86_64 under pc-q35-7.2"
    details: dict = {}
    verdict, reason = explain_hazards({"pvpanic-pci": pvpanic}, f"pvpanic-pci: {pvpanic}", old, new, pinned, details)
    assert verdict == "known-bug" and details["known_bug"]["id"] == "pvpanic-shutdown-event-no-compat"
    details = {}
    both = {"pvpanic-pci": pvpanic, "virtio-net-pci": other}
    verdict, reason = explain_hazards(both, "whole", old, new, pinned, details)
    assert verdict == "fail" and "known_bug" not in details
    assert details["explained"] == {"pvpanic-pci": "pvpanic-shutdown-event-no-compat"}
    assert reason.startswith("virtio-net-pci: [P1] x-made-up") and "pvpanic-pci (pvpanic-shutdown" in reason


def test_c1_takes_only_what_no_differing_compat_entry_can_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    """C1 on entries 10.0.2's query-machines lists (a few of each type's, the ones that matter here): pc-i440fx-2.5's
    list differs from 2.6's by isa-fdc and vmxnet3 entries. A floppy plugs into its isa-fdc
    placeholder (whose fallback the entry sets): read again; e1000 is taken. A difference that reaches a
    device the machine adds (2.4's fw_cfg_io: no DMA, which vmgenid needs) takes nothing."""
    import conformance.vmstate as vm

    entry = lambda kind, prop, value: {"qom-type": kind, "property": prop, "value": value}  # noqa: E731
    newer = [entry("virtio-pci", "x-pcie-pm-init", "off")]
    machines = [{"name": "pc-i440fx-2.6", "compat-props": newer},
                {"name": "pc-i440fx-2.5", "compat-props": [*newer, entry("isa-fdc", "fallback", "144"),
                                                           entry("vmxnet3", "x-old-msi-offsets", "on")]},
                {"name": "pc-i440fx-2.4", "compat-props": [*newer, entry("isa-fdc", "fallback", "144"),
                                                           entry("vmxnet3", "x-old-msi-offsets", "on"),
                                                           entry("fw_cfg_io", "dma_enabled", "off")]}]
    learned = vm._Learned(machines=machines, applies={"virtio-pci": {"virtio-pci", "virtio-net-pci"},
                                                      "isa-fdc": {"isa-fdc"}, "vmxnet3": {"vmxnet3"},
                                                      "fw_cfg_io": {"fw_cfg_io"}})
    learned.extra["floppy"] = ("", ["-device", "isa-fdc,id=vmsbus{n}"])
    monkeypatch.setitem(vm._LEARNED, "/qemu-10.0", learned)
    assert vm.compat_touched(Path("/qemu-10.0"), "pc-i440fx-2.5", "pc-i440fx-2.6") == {"isa-fdc", "vmxnet3"}
    assert vm.compat_touched(Path("/qemu-7.2"), "pc-i440fx-2.5", "pc-i440fx-2.6") is None  # nothing learnt
    basis = vm.MachineProps("pc-i440fx-2.6", devices={
        "floppy": {"props": {"drive-type": '"288"'}, "children": {}},
        "e1000": {"props": {"mac": "x"}, "children": {}},
        "vmxnet3": {"props": {}, "children": {}},
        "vmgenid": {"error": "vmgenid requires DMA"}}, machine_devices={"fw_cfg_io": {"dma_enabled": ["true"]}})
    facts = vm.MachineProps("pc-i440fx-2.5")
    touched = vm.compat_touched(Path("/qemu-10.0"), "pc-i440fx-2.5", "pc-i440fx-2.6") or set()
    vm._derive(facts, basis, touched, list(basis.devices), learned)
    assert set(facts.devices) == {"e1000"} and facts.devices["e1000"]["same_as"] == "pc-i440fx-2.6"
    assert facts.machine_devices == basis.machine_devices and facts.machine_same_as == "pc-i440fx-2.6"
    older = vm.MachineProps("pc-i440fx-2.4")
    vm._derive(older, facts, vm.compat_touched(Path("/qemu-10.0"), "pc-i440fx-2.4", "pc-i440fx-2.5") or set(),
               ["e1000"], learned)
    assert older.devices == {} and older.machine_devices is None


def test_a_refusal_seen_under_a_newer_type_is_tried_alone_first_and_the_facts_stay_the_same(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """vmgenid is refused under pc-i440fx-2.4 and older (no fw_cfg DMA). Under 2.4 the batch fails on it and it
    is tried alone (two QEMUs); under 2.3 that refusal is a hint: alone first, one QEMU, and the batch plugs
    the rest at once. What each machine type says is what it says without the hints (a QEMU stand-in)."""
    import conformance.vmstate as vm
    from conformance.qemu.process import Exit, LaunchFailed
    from conformance.qemu.qmp import QmpCommandFailed

    started: list[list[str]] = []

    class Qmp:
        def __init__(self, devices: list[str]) -> None:
            self.devices = devices

        def cmd(self, name: str, **_: object) -> str:
            if name != "human-monitor-command":
                raise QmpCommandFailed(name, None, "CommandNotFound", "no")
            return "".join(f'dev: {d}, id "cov{n}"\n  x = "{d}"\n' for n, d in enumerate(self.devices))

    class Paused:
        def __init__(self, devices: list[str]) -> None:
            self.qmp = Qmp(devices)

        def stop(self) -> None:
            pass

    def fake_paused(_binary: Path, machine: str, _folder: Path, args: list[str], name: str = "",
                    **_: object) -> Paused:
        devices = [a.split(",")[0] for i, a in enumerate(args) if i and args[i - 1] == "-device"]
        started.append(devices)
        if "vmgenid" in devices and machine <= "pc-i440fx-2.4":
            n = devices.index("vmgenid")
            raise LaunchFailed(name, Exit(1), [], f"-device vmgenid,id=cov{n}: vmgenid requires DMA write support\n")
        return Paused(devices)

    def read(machine: str, *, hints: bool) -> tuple[dict[str, object], int]:
        if not hints:
            monkeypatch.setattr(vm, "_REFUSED_OLD", {})
        before = len(started)
        facts = vm.MachineProps(machine)
        vm._probe(Path("qemu"), machine, ["e1000", "vmgenid", "VGA"], tmp_path, facts)
        return facts.devices, len(started) - before

    monkeypatch.setattr(vm, "paused", fake_paused)
    monkeypatch.setattr(vm, "_LEARNED", {"qemu": vm._Learned(buses={})})
    monkeypatch.setattr(vm, "_REFUSED_OLD", {})
    monkeypatch.setattr(vm, "_REFUSED_NEWEST", set())
    newer, newer_qemus = read("pc-i440fx-2.4", hints=True)
    assert newer_qemus == 3 and "error" in newer["vmgenid"]  # batch fails, vmgenid alone fails, batch again
    older, older_qemus = read("pc-i440fx-2.3", hints=True)
    assert (older_qemus, started[-2:]) == (2, [["vmgenid"], ["e1000", "VGA"]])
    assert older == newer == read("pc-i440fx-2.3", hints=False)[0]
    vm._REFUSED_OLD[("pc-i440fx", "vmgenid")] = (2, 6)  # a wrong hint costs one QEMU, not a fact
    plugs, plugs_qemus = read("pc-i440fx-2.5", hints=True)
    assert (plugs_qemus, started[-2:]) == (2, [["vmgenid"], ["e1000", "vmgenid", "VGA"]])
    assert plugs == read("pc-i440fx-2.5", hints=False)[0] and "props" in plugs["vmgenid"]


class _StandIn:
    """A QEMU stand-in for the probe: refuses what ``refuse(machine, devices, args)`` names (QEMU's words, or
    None to start), answers ``info qtree`` with every plugged device and its placeholders' properties."""

    def __init__(self, refuse: Any) -> None:
        self.refuse = refuse
        self.started: list[list[str]] = []

    def paused(self, _binary: Path, machine: str, _folder: Path, args: list[str], name: str = "", **_: object
               ) -> Any:
        from conformance.qemu.process import Exit, LaunchFailed
        from conformance.qemu.qmp import QmpCommandFailed

        devices = [a for i, a in enumerate(args) if i and args[i - 1] == "-device" and ",id=cov" in a]
        self.started.append([d.split(",")[0] for d in devices])
        why = self.refuse(machine, devices, args)
        if why:
            raise LaunchFailed(name, Exit(1), [], why)

        class Qmp:
            def cmd(self, command: str, **_: object) -> str:
                if command != "human-monitor-command":
                    raise QmpCommandFailed(command, None, "CommandNotFound", "no")
                return "".join(f'dev: {d.split(",")[0]}, id "cov{n}"\n  drive = "{"drive=" in d}"\n'
                               for n, d in enumerate(devices))

        class Paused:
            qmp = Qmp()

            def stop(self) -> None:
                pass

        return Paused()


def test_a_binary_learning_takes_the_placeholders_another_learnt_and_drops_a_wrong_hint(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """scsi-hd needs a drive on every build: the first binary learns it (a failed start), the second plugs it
    at once. A hint a build refuses (its 'ide-cd' has no such placeholder to take) is dropped and the type
    learns from scratch: the facts are those read without hints."""
    import conformance.vmstate as vm

    def refuse(machine: str, devices: list[str], _args: list[str]) -> str | None:
        for d in devices:
            kind = d.split(",")[0]
            if kind == "scsi-hd" and "drive=" not in d:
                return f"-device {d}: drive property not set\n"
            if kind == "ide-cd" and "drive=" in d and machine.endswith("10.0"):
                return f"-device {d}: Property 'ide-cd.drive' not found\n"  # the 10.0 stand-in refuses the hint
            if kind == "ide-cd" and "drive=" not in d and machine.endswith("5.2"):
                return f"-device {d}: No drive specified\n"
        return None

    qemu = _StandIn(refuse)
    monkeypatch.setattr(vm, "paused", qemu.paused)
    monkeypatch.setattr(vm, "_LEARNED", {"a": vm._Learned(buses={}), "b": vm._Learned(buses={}),
                                         "c": vm._Learned(buses={})})
    monkeypatch.setattr(vm, "_PLACEHOLDER_HINTS", {})
    monkeypatch.setattr(vm, "_REFUSED_NEWEST", set())
    types = ["e1000", "ide-cd", "scsi-hd"]

    def learn(binary: str, machine: str) -> tuple[dict[str, Any], int]:
        before = len(qemu.started)
        facts = vm.MachineProps(machine)
        vm._probe(Path(binary), machine, types, tmp_path, facts, learn=True)
        return facts.devices, len(qemu.started) - before

    first, first_qemus = learn("a", "pc-q35-5.2")
    assert first_qemus == 3 and "error" not in first["scsi-hd"] and "error" not in first["ide-cd"]
    second, second_qemus = learn("b", "pc-q35-5.2")
    assert (second, second_qemus) == (first, 1)
    third, third_qemus = learn("c", "pc-q35-10.0")  # ide-cd's hint refused: dropped, then plugged without
    assert third_qemus == 2 and third["ide-cd"]["props"]["drive"] == '"False"' and "error" not in third["scsi-hd"]
    assert vm._LEARNED["c"].unhinted == {"ide-cd"} and "ide-cd" not in vm._LEARNED["c"].extra


def test_no_voice_is_a_missing_audiodev() -> None:
    """5.2's and 7.2's gus say "No voice" without an audiodev (their default backend opens none here); with
    the placeholder it plugs under every type, as libvirt's argv, which always names an audiodev, has it."""
    from conformance.vmstate import _placeholder

    assert _placeholder("-device gus,id=cov3: No voice", None) == (
        ",audiodev=vmsa{n}", ["-audiodev", "none,id=vmsa{n}"])
    assert _placeholder("-device gus,id=cov3: No voice", (",audiodev=vmsa{n}", [])) is None  # no second one


def test_a_placeholder_property_the_device_lacks_is_taken_back() -> None:
    """7.2's "No voice" names no device, and the bisection can blame one before the audio device (usb-kbd under
    pc-i440fx-2.1 got an audiodev, then 'Property usb-kbd.audiodev not found' read as a refusal: 18 false fails
    of a cold sweep). The audiodev is taken back, and never given to that type again; its other placeholders
    stay."""
    from conformance.vmstate import _Learned, _misplaced, _placeholder

    learned = _Learned()
    used = (",audiodev=vmsa{n}", ["-audiodev", "none,id=vmsa{n}", "-device", "piix3-usb-uhci,id=vmsbus{n}"])
    learned.extra["usb-kbd"] = used
    assert _misplaced("usb-kbd", "Property 'usb-kbd.audiodev' not found", used, learned)
    assert learned.extra["usb-kbd"] == ("", ["-device", "piix3-usb-uhci,id=vmsbus{n}"])
    assert ("usb-kbd", "audiodev") in learned.lacks
    lacks = {p for t, p in learned.lacks if t == "usb-kbd"}
    assert _placeholder("No voice", learned.extra["usb-kbd"], lacks) is None  # not guessed again
    assert _placeholder("No voice", None) is not None  # another type still gets it
    # a property the probe did not give, or another device's: QEMU's words stand (a refusal)
    assert not _misplaced("usb-kbd", "Property 'usb-kbd.foo' not found", used, learned)
    assert not _misplaced("usb-mouse", "Property 'usb-kbd.audiodev' not found", used, learned)


def test_a_props_file_of_other_code_is_read_again(tmp_path: Path) -> None:
    """A device reading cached by other probe code is not handed out (the 66 false gus fails of a props
    folder written before 94a308c): the file must name this code's RULES_KEY."""
    from conformance.vmstate import RULES_KEY, cached_props

    entry = {"format": CACHE_FORMAT, "code": RULES_KEY, "devices": {"gus": {"props": {"irq": 7}}},
             "machine_devices": {}, "compat_props": None, "machine_same_as": ""}
    path = tmp_path / "pc-q35-7.2.json"
    path.write_text(json.dumps(entry))
    assert cached_props(path, "pc-q35-7.2").devices == {"gus": {"props": {"irq": 7}}}
    for stale in ({**entry, "code": "0" * 12}, {k: v for k, v in entry.items() if k != "code"},
                  {**entry, "format": CACHE_FORMAT - 1}):
        path.write_text(json.dumps(stale))
        read = cached_props(path, "pc-q35-7.2")
        assert read.devices == {} and read.machine_devices is None
    path.write_text("[]")  # not an entry at all
    assert cached_props(path, "pc-q35-7.2").devices == {}
