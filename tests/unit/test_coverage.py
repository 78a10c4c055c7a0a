"""Device coverage, the pure parts: what a build said (``-device help``, ``-dump-vmstate``, QOM) -> what a
family offers, what the cases cover, the exclusions file, the table and the report panel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.coverage import (
    AUDIO,
    EXCLUSIONS,
    NOT_ABOUT_THE_BUS,
    BuildFacts,
    CoverageError,
    Exclusion,
    FamilyFacts,
    _culprit,
    _plug_args,
    _reason,
    attribute_blockers,
    classify_state,
    family_result,
    format_table,
    headline,
    load_exclusions,
    off_family,
    parse_device_categories,
    parse_device_help,
    parse_vmstate_dump,
    section_names,
    summary,
)

DEVICE_HELP = """\
Controller/Bridge/Hub devices:
name "pcie-root-port", bus PCI, desc "PCI Express Root Port"
name "usb-hub", bus usb-bus

Network devices:
name "virtio-net-pci", bus PCI, alias "virtio-net"
name "virtio-net-device", bus virtio-bus

Misc devices:
name "pc-dimm", desc "DIMM memory module"
name "isa-serial", bus ISA
"""

DUMP = {
    "vmschkmachine": {"Name": "pc-q35-7.2"},
    "isa-serial": {"Name": "isa-serial", "version_id": 3, "minimum_version_id": 2,
                   "Description": {"name": "serial", "version_id": 3, "minimum_version_id": 2,
                                   "Fields": [{"field": "state", "size": 8}]}},
    "virtio-net-device": {"Name": "virtio-net-device", "Description": {
        "name": "virtio-net", "Fields": [{"field": "virtio", "size": 0}]}},
    "usb-hub": {"Name": "usb-hub", "Description": {"name": "usb-hub", "Subsections": [{"name": "x"}]}},
    "usb-net": {"Name": "usb-net", "version_id": 0, "Description": {"name": "usb-net", "version_id": 0}},
    "ICH9-LPC": {"Name": "ICH9-LPC", "Description": {"name": "ICH9LPC", "Fields": [{"field": "d"}]}},
}


def test_device_help_lists_types_with_their_bus() -> None:
    found = parse_device_help(DEVICE_HELP)
    assert found == {"pcie-root-port": "PCI", "usb-hub": "usb-bus", "virtio-net-pci": "PCI",
                     "virtio-net-device": "virtio-bus", "pc-dimm": None, "isa-serial": "ISA"}


def test_device_help_categories() -> None:
    found = parse_device_categories(DEVICE_HELP)
    assert found["pcie-root-port"] == "Controller/Bridge/Hub" and found["usb-hub"] == "Controller/Bridge/Hub"
    assert found["virtio-net-pci"] == "Network" and found["isa-serial"] == "Misc"


def test_dump_is_keyed_by_class_and_an_empty_description_is_unmigratable() -> None:
    stateful, empty = parse_vmstate_dump(DUMP)
    assert stateful == {"isa-serial", "virtio-net-device", "usb-hub", "ICH9-LPC"}  # subsections alone count
    assert empty == {"usb-net"}
    assert "vmschkmachine" not in stateful | empty


def test_state_through_a_child_an_unmigratable_child_and_a_broken_type() -> None:
    stateful, empty = parse_vmstate_dump(DUMP)
    offered = ["isa-serial", "virtio-net-pci", "usb-net", "vhost-user-x-pci", "gl-pci", "pc-dimm"]
    children = {"virtio-net-pci": ["virtio-pci-bus", "virtio-net-device"], "vhost-user-x-pci": ["usb-net"],
                "pc-dimm": []}
    migratable, unmigratable = classify_state(offered, stateful, empty, children, {"gl-pci": "missing type"})
    assert migratable == {"isa-serial": "own state", "virtio-net-pci": "state of its child virtio-net-device"}
    assert set(unmigratable) == {"usb-net", "vhost-user-x-pci"}
    assert "empty state description" in unmigratable["usb-net"]
    assert "usb-net" in unmigratable["vhost-user-x-pci"]
    assert "gl-pci" not in migratable and "gl-pci" not in unmigratable  # broken: neither
    assert "pc-dimm" not in migratable and "pc-dimm" not in unmigratable  # no state at all


def test_off_family_by_bus_by_machine_refusal_and_carried_children() -> None:
    buses = {"isa-serial": "ISA", "virtio-net-pci": "PCI", "virtio-net-device": "virtio-bus",
             "intel-iommu": "System", "usb-hub": "usb-bus", "e1000": "PCI"}
    subtypes = {"PCI": {"PCIE"}, "virtio-bus": {"virtio-pci-bus", "virtio-mmio-bus"}, "System": set()}
    refused = {"virtio-net-device": "No 'virtio-bus' bus found for device 'virtio-net-device'",
               "intel-iommu": "Parameter 'driver' expects a dynamic sysbus device type for the machine",
               "e1000": "Property 'e1000.netdev' can't find value 'x'"}
    present = {"PCIE", "System", "virtio-pci-bus"}
    off = off_family("virt", buses, buses, present, subtypes, refused)
    assert set(off) == {"isa-serial", "usb-hub", "virtio-net-device", "intel-iommu"}
    assert "needs a 'ISA' bus" in off["isa-serial"] and "virt" in off["isa-serial"]
    assert "dynamic sysbus" in off["intel-iommu"]
    # a refusal that is not about the family (a missing property) keeps the type on it
    assert "e1000" not in off and "virtio-net-pci" not in off
    # virtio-net-device rides in virtio-net-pci, which the family takes: coverable through it
    carried = off_family("virt", buses, buses, present, subtypes, refused, {"virtio-net-device": ["virtio-net-pci"]})
    assert "virtio-net-device" not in carried and "isa-serial" in carried


# query-migrate replies recorded from a paused q35 with these devices cold-plugged (7.2.22 and 10.0.2)
QUERY_MIGRATE_72 = {"blocked-reasons": ["non-migratable device: 0000:00:01.0/2/usb-mtp",
                                        "non-migratable device: 0000:00:02.0/virtio-crypto",
                                        "non-migratable device: 0000:00:01.0/1/usb-uas"]}
QUERY_MIGRATE_100 = {"blocked-reasons": ["non-migratable device: 0000:00:03.0/virtio-sound-device",
                                         *QUERY_MIGRATE_72["blocked-reasons"]]}
MIGRATE_52 = "State blocked by non-migratable device '0000:00:01.0/1/usb-uas'"  # QEMU 5.2's migrate error
DUMP_NAMES = {"virtio-crypto-device": {"Description": {"name": "virtio-crypto", "Fields": [{"field": "x"}]}},
              "virtio-sound-device": {"Description": {"name": "virtio-sound-device", "Fields": [{"field": "x"}]}},
              "usb-uas": {"Description": {"name": "usb-uas", "Fields": [{"field": "dev"}]}},
              "usb-tablet": {"Description": {"name": "usb-ptr", "Fields": [{"field": "dev"}]}},
              "vmschkmachine": {"Name": "pc-q35-7.2"}}
PLUGGED = ["qemu-xhci", "usb-uas", "usb-mtp", "usb-tablet", "virtio-crypto-pci", "virtio-sound-pci"]
CHILDREN = {"virtio-crypto-pci": ["virtio-crypto-device"], "virtio-sound-pci": ["virtio-sound-device"]}


def test_section_names_from_the_dump() -> None:
    names = section_names(DUMP_NAMES)
    assert names["virtio-crypto-device"] == "virtio-crypto" and names["usb-tablet"] == "usb-ptr"
    assert "vmschkmachine" not in names


@pytest.mark.parametrize(("reasons", "blocked"), [
    (QUERY_MIGRATE_72["blocked-reasons"], {"usb-mtp", "usb-uas", "virtio-crypto-pci", "virtio-crypto-device"}),
    (QUERY_MIGRATE_100["blocked-reasons"], {"usb-mtp", "usb-uas", "virtio-crypto-pci", "virtio-crypto-device",
                                            "virtio-sound-pci", "virtio-sound-device"}),
    ([MIGRATE_52], {"usb-uas"}),
])
def test_blocked_reasons_map_to_the_device_types(reasons: list[str], blocked: set[str]) -> None:
    ids = {f"cov{i}": t for i, t in enumerate(PLUGGED)}
    found, rest = attribute_blockers(reasons, PLUGGED, ids, section_names(DUMP_NAMES), CHILDREN,
                                     also=["virtio-crypto-device", "virtio-sound-device", "usb-tablet"])
    assert set(found) == blocked and rest == []
    if "virtio-crypto-pci" in blocked:  # the section is the dump's Description.name, the pci proxy's child's
        assert found["virtio-crypto-pci"] == ("migration blocked (QEMU: non-migratable device: "
                                              "0000:00:02.0/virtio-crypto)")
    else:
        assert found["usb-uas"] == f"migration blocked (QEMU: {MIGRATE_52})"
    assert "usb-tablet" not in found and "qemu-xhci" not in found


def test_an_explicit_blocker_maps_by_its_id_or_type_and_else_is_left_for_bisection() -> None:
    ids = {"cov0": "qemu-xhci", "cov7": "ivshmem-doorbell"}
    reasons = ["Migration is disabled when using feature 'peer' in device 'cov7'",  # made up: the id names it
               "usb-host: cannot migrate a host device",  # made up: the type names it
               "Migration disabled: vhost-user backend lacks VHOST_USER_PROTOCOL_F_LOG_SHMFD feature."]
    found, rest = attribute_blockers(reasons, ["qemu-xhci", "ivshmem-doorbell", "usb-host"], ids, {}, {})
    assert set(found) == {"ivshmem-doorbell", "usb-host"}
    assert rest == [reasons[2]]
    # an explicit blocker never lands on a type that is not plugged
    found, rest = attribute_blockers(reasons[1:2], ["qemu-xhci"], ids, {}, {}, also=["usb-host"])
    assert found == {} and rest == reasons[1:2]


def test_cold_plug_gives_the_blockers_backends_and_a_refused_sound_device_its_own_audiodev() -> None:
    wanted = ["qemu-xhci", "usb-mtp", "virtio-crypto-pci", "AC97"]
    buses: dict[str, str | None] = {"qemu-xhci": "PCI", "usb-mtp": "usb-bus", "virtio-crypto-pci": "PCI", "AC97": "PCI"}
    specs = _plug_args(wanted, wanted, buses, "pcie.0", {"AC97": AUDIO})
    assert specs["usb-mtp"] == ["-device", "usb-mtp,id=cov1,rootdir=/tmp,readonly=on"]
    assert specs["virtio-crypto-pci"][:2] == ["-object", "cryptodev-backend-builtin,id=covcrypto2"]
    assert "cryptodev=covcrypto2" in specs["virtio-crypto-pci"][3]
    assert specs["AC97"][:2] == ["-audiodev", "none,id=covaudio3"]
    assert specs["AC97"][3].endswith(",audiodev=covaudio3") and "bus=pcie.0" in specs["AC97"][3]


def test_a_blocked_type_is_unmigratable_on_its_family_only() -> None:
    build = _build({"usb-tablet": ["usb-case"]})
    build.families["q35"].blocked = {"usb-tablet": "migration blocked (QEMU: non-migratable device: x/usb-ptr)"}
    q35 = family_result(build, "q35", {})
    assert "usb-tablet" not in q35["migratable"] and "usb-tablet" not in q35["covered"]
    assert q35["unmigratable"]["usb-tablet"].startswith("migration blocked (QEMU: ")
    assert "usb-tablet" not in q35["not_on_family"]
    assert "usb-tablet" not in family_result(build, "pc", {})["unmigratable"]


def _build(covered: dict[str, list[str]], refused: dict[str, str] | None = None) -> BuildFacts:
    buses: dict[str, str | None] = {"isa-serial": "ISA", "virtio-net-pci": "PCI", "vfio-pci": "PCI",
                                    "pcie-root-port": "PCI", "usb-tablet": "usb-bus"}
    return BuildFacts(
        binary="/usr/bin/qemu-system-x86_64", key="k", version="7.2.22", arch="x86_64", buses=buses,
        categories={"usb-tablet": "Input", "pcie-root-port": "Controller/Bridge/Hub"},
        stateful=["isa-serial", "ICH9-LPC", "vfio-pci", "pcie-root-port", "usb-tablet"],
        migratable={t: "own state" for t in buses}, unmigratable={"usb-net": "empty"}, broken={}, carriers={},
        bus_subtypes={"PCI": ["PCIE"]},
        families={"q35": FamilyFacts("q35", ["PCIE", "ISA", "usb-bus"], refused or {}, covered),
                  "pc": FamilyFacts("pc", ["PCI", "ISA"], {}, {})})


def test_family_result_counts_and_reasons() -> None:
    exclusions = {"vfio-pci": Exclusion("host hardware", "passes a host PCI device through"),
                  "pcie-root-port": Exclusion("family", "PCIe only", ("pc",))}
    build = _build({"ICH9-LPC": ["q35-minimal"], "isa-serial": ["q35-minimal"], "virtio-net-pci": ["net"]})
    q35 = family_result(build, "q35", exclusions)
    assert q35["migratable"] == ["isa-serial", "pcie-root-port", "usb-tablet", "vfio-pci", "virtio-net-pci"]
    assert q35["not_coverable"] == {"vfio-pci": "host hardware: passes a host PCI device through"}
    assert q35["covered"]["ICH9-LPC"] == ["q35-minimal"]  # a machine device counts as covered
    s = summary(q35)
    assert (s["offered"], s["covered"], s["not_coverable"]) == (5, 2, 1)
    assert s["uncovered"] == ["pcie-root-port", "usb-tablet"]
    assert s["percent"] == pytest.approx(50.0)
    pc = family_result(build, "pc", exclusions)
    assert "usb-tablet" in pc["not_on_family"] and "usb-tablet" not in pc["migratable"]
    assert pc["not_coverable"]["pcie-root-port"].startswith("family: ")
    assert summary(pc)["covered"] == 0


def test_a_covered_type_is_never_not_coverable() -> None:
    exclusions = {"vfio-pci": Exclusion("host hardware", "a host device")}
    q35 = family_result(_build({"vfio-pci": ["teaming"]}), "q35", exclusions)
    assert "vfio-pci" not in q35["not_coverable"] and summary(q35)["covered"] == 1


def test_table_and_headline() -> None:
    exclusions = {"vfio-pci": Exclusion("host hardware", "a host device")}
    build = _build({"isa-serial": ["q35-minimal"], "virtio-net-pci": ["net"]})
    rows = [family_result(build, f, exclusions) for f in ("q35", "pc")]
    table = format_table(rows)
    assert "QEMU 7.2.22 x86_64 (/usr/bin/qemu-system-x86_64)" in table
    assert "uncovered on q35 (2), by -device help's category:" in table
    assert "    Controller/Bridge/Hub (1): pcie-root-port\n    Input (1): usb-tablet" in table
    assert headline(rows) == "7.2.22 q35 2/4 (50%), pc 0/3 (0%)"


def test_culprit_from_qemu_start_up_errors() -> None:
    plugged = ["AC97", "virtio-9p-pci", "ramfb"]
    named = "qemu-system-x86_64: -device virtio-9p-pci,id=cov1,bus=pcie.0,addr=0x2.1: 9pfs device couldn't find fsdev"
    assert _culprit(named, plugged) == "virtio-9p-pci"
    assert _reason(named, "virtio-9p-pci") == "9pfs device couldn't find fsdev"
    assert _culprit("qemu-system-x86_64: Option '-device ramfb' cannot be handled by this machine", plugged) == "ramfb"
    assert _culprit('RAMBlock "vga.vram" already registered, abort!', plugged) is None  # bisected instead
    warning = ("qemu-system-x86_64: -device usb-hub,id=cov2: Warning: speed mismatch\n"
               "qemu-system-x86_64: -device usb-hub,id=cov2: Device initialization failed")
    assert _reason(warning, "usb-hub") == "Device initialization failed"


def test_only_a_refusal_about_the_bus_is_retried_elsewhere() -> None:
    for why in ("drive property not set", "Parameter 'chardev' is missing", "'tpmdev' property is required",
                "No 'ccid-bus' bus found for device 'ccid-card-passthru'", "You must specify a 'memdev'"):
        assert NOT_ABOUT_THE_BUS.search(why), why
    for why in ("Device initialization failed", "Only one global VGA device can be used at a time"):
        assert not NOT_ABOUT_THE_BUS.search(why), why


def test_the_exclusions_file_is_short_and_well_formed() -> None:
    exclusions = load_exclusions()
    assert exclusions, f"{EXCLUSIONS} is empty"
    assert all(e.kind in ("host hardware", "host service", "TCG", "family") for e in exclusions.values())
    assert all(e.reason and "\n" not in e.reason for e in exclusions.values())
    assert len(exclusions) < 60  # a short list: the live test holds it under a third of each family
    assert "virtio-net-pci" not in exclusions  # a device that only needs work is not excluded


def test_a_bad_exclusion_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "ex.toml"
    bad.write_text('# comment\n[devices."e1000"]\nkind = "needs work"\nreason = "no case yet"\n')
    with pytest.raises(CoverageError) as err:
        load_exclusions(bad)
    assert f"{bad}:2:" in err.value.format() and "needs work" in err.value.format()


def test_report_panel_from_coverage_json(tmp_path: Path) -> None:
    from conformance.report.html import write_report

    exclusions = {"vfio-pci": Exclusion("host hardware", "a <host> device")}
    build = _build({"isa-serial": ["q35-minimal"], "virtio-net-pci": ["net"]})
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text("")
    (run / "coverage.json").write_text(json.dumps([family_result(build, "q35", exclusions)]))
    page = write_report([run / "results.jsonl"], tmp_path / "out").read_text()
    assert '<section id="coverage">' in page and 'href="#coverage"' in page
    assert "<b>7.2.22</b> x86_64" in page and "50.0%" in page
    assert "vfio-pci: host hardware: a &lt;host&gt; device" in page  # escaped
    assert "uncovered (2):" in page
    plain = write_report([run / "results.jsonl"], tmp_path / "out2").read_text()
    assert '<section id="coverage">' in plain  # found beside the results file, not only in the output
    (run / "coverage.json").unlink()
    assert '<section id="coverage">' not in write_report([run / "results.jsonl"], tmp_path / "out3").read_text()
