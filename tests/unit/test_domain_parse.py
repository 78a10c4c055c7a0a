"""Domain XML -> model -> XML, and the semantic rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.caps.store import resolve
from conformance.domain.format import format_domain
from conformance.domain.parse import parse_domain
from conformance.domain.semantics import TEAMING_UNSUPPORTED, validate_domain
from conformance.errors import DomainInvalid, UnsupportedByQemu

MINIMAL = """<domain type='qemu'>
  <name>guest</name>
  <memory unit='MiB'>512</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/images/guest.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:11:22:33'/>
      <model type='virtio'/>
      <teaming type='persistent'/>
      <alias name='ua-net0'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x03' slot='0x07' function='0x1'/></source>
      <teaming type='transient' persistent='ua-net0'/>
    </hostdev>
    <frobnicator speed='11'/>
  </devices>
</domain>
"""


def corpus_inputs(corpus: Path) -> list[Path]:
    """Every input NAME.xml of the corpus, all trees (index.json lists them)."""
    index = json.loads((corpus / "index.json").read_text())
    return sorted({corpus / var["input"] for case in index["cases"] for var in case["variants"]})


def corpus_rejected_inputs(corpus: Path) -> set[Path]:
    """Inputs libvirt only ever refuses (every expectation an error: its parse-error tests among them)."""
    index = json.loads((corpus / "index.json").read_text())
    return {corpus / var["input"] for case in index["cases"] for var in case["variants"]
            if var["outputs"] and all(o["kind"] == "error" for o in var["outputs"])}


def test_parse_reads_the_typed_fields() -> None:
    dom = parse_domain(MINIMAL, source="minimal.xml")
    assert dom.name == "guest"
    assert dom.memory_kib == 512 * 1024
    assert dom.os.machine == "q35"
    disk = dom.devices.disks[0]
    assert (disk.type, disk.target_dev, disk.target_bus, disk.driver["cache"]) == ("file", "vda", "virtio", "none")
    assert disk.source is not None and disk.source.path == "/images/guest.qcow2"
    assert disk.address is not None and (disk.address.type, disk.address.bus, disk.address.slot) == ("pci", 1, 0)
    net = dom.devices.interfaces[0]
    assert net.teaming is not None and net.teaming.type == "persistent" and net.alias == "ua-net0"
    hd = dom.devices.hostdevs[0]
    assert hd.source_address is not None and hd.source_address.function == 1
    assert hd.teaming is not None and hd.teaming.persistent == "ua-net0"


def test_unknown_device_is_kept_verbatim() -> None:
    text = format_domain(parse_domain(MINIMAL))
    assert "<frobnicator speed='11'/>" in text


def test_malformed_xml_names_file_and_line() -> None:
    with pytest.raises(DomainInvalid) as err:
        parse_domain("<domain type='kvm'>\n  <name>x</name>\n  <memory>1</memory\n</domain>", source="bad.xml")
    assert "bad.xml:" in str(err.value)
    assert err.value.line is not None and err.value.line >= 3
    assert "malformed XML" in str(err.value)


def test_bad_values_are_domain_errors() -> None:
    with pytest.raises(DomainInvalid, match="unknown unit"):
        parse_domain("<domain><name>x</name><memory unit='parsecs'>1</memory></domain>")
    with pytest.raises(DomainInvalid, match="not a libvirt domain"):
        parse_domain("<network><name>x</name></network>")
    with pytest.raises(DomainInvalid, match="no <name>"):
        parse_domain("<domain><memory>1024</memory></domain>")


def test_round_trip_is_stable_for_minimal() -> None:
    once = format_domain(parse_domain(MINIMAL))
    assert format_domain(parse_domain(once)) == once


def test_round_trip_is_stable_over_the_corpus(corpus: Path) -> None:
    inputs, rejected = corpus_inputs(corpus), corpus_rejected_inputs(corpus)
    assert len(inputs) > 60
    unstable, unparsed = [], []
    for path in inputs:
        try:
            once = format_domain(parse_domain(path.read_bytes(), source=str(path)))
        except DomainInvalid:
            unparsed.append(path)
            continue
        if format_domain(parse_domain(once)) != once:
            unstable.append(path.name)
    assert unstable == []
    assert unparsed and set(unparsed) <= rejected, sorted(p.name for p in set(unparsed) - rejected)


def test_format_keeps_what_libvirt_output_has(corpus: Path) -> None:
    path = corpus / "cases" / "net-virtio-teaming" / "net-virtio-teaming.xml"
    text = format_domain(parse_domain(path.read_bytes()))
    assert "<teaming type='transient' persistent='ua-backup0'/>" in text
    assert "<memory unit='KiB'>219100</memory>" in text


# --- semantics -------------------------------------------------------------------------------


def test_valid_teaming_passes() -> None:
    validate_domain(parse_domain(MINIMAL))


def test_teaming_persistent_must_be_virtio() -> None:
    xml = MINIMAL.replace("<model type='virtio'/>", "<model type='e1000'/>")
    with pytest.raises(DomainInvalid, match="virtio-net teaming persistent interface must be <model "
                                            "type='virtio'/>, not 'e1000'"):
        validate_domain(parse_domain(xml))


def test_teaming_transient_must_be_hostdev() -> None:
    xml = MINIMAL.replace("</devices>", """<interface type='user'>
      <model type='virtio'/><teaming type='transient' persistent='ua-net0'/></interface></devices>""")
    with pytest.raises(DomainInvalid, match="transient interface must be type='hostdev', not 'user'"):
        validate_domain(parse_domain(xml))


def test_teaming_transient_interface_of_a_network_is_accepted() -> None:
    # libvirt lets a type='network' interface be transient (its network may be a hostdev pool)
    xml = MINIMAL.replace("</devices>", """<interface type='network'><source network='pool'/>
      <teaming type='transient' persistent='ua-net0'/></interface></devices>""")
    validate_domain(parse_domain(xml))


def test_teaming_transient_needs_its_persistent_attribute() -> None:
    xml = MINIMAL.replace(" persistent='ua-net0'", "")
    with pytest.raises(DomainInvalid, match="missing required persistent attribute in hostdev teaming element"):
        validate_domain(parse_domain(xml))


def test_teaming_hostdev_must_be_transient() -> None:
    xml = MINIMAL.replace("<teaming type='transient' persistent='ua-net0'/>", "<teaming type='persistent'/>")
    with pytest.raises(DomainInvalid, match="teaming hostdev devices must have type='transient'"):
        validate_domain(parse_domain(xml))


# libvirt 9.0 (the host's, asked live: tests/live/test_libvirt_oracle.py) and 11.3 (its source) accept the
# next four; the suite refused them until issue 20


def test_transient_naming_a_missing_alias_is_accepted() -> None:
    dom = parse_domain(MINIMAL.replace("persistent='ua-net0'", "persistent='ua-nothere'"))
    validate_domain(dom)
    assert dom.devices.hostdevs[0].teaming.persistent == "ua-nothere"


def test_persistent_without_an_alias_is_accepted() -> None:
    dom = parse_domain(MINIMAL.replace("<alias name='ua-net0'/>", ""))
    validate_domain(dom)
    assert dom.devices.interfaces[0].alias is None


@pytest.mark.parametrize("alias", ["net0", "ua-net.0", "ua-n\u00e9t", "ua-net 0", "UA-net0"])
def test_alias_libvirt_drops_is_dropped(alias: str) -> None:
    dom = parse_domain(MINIMAL.replace("<alias name='ua-net0'/>", f"<alias name='{alias}'/>"))
    validate_domain(dom)
    assert dom.devices.interfaces[0].alias is None


@pytest.mark.parametrize("alias", ["ua-net0", "ua-my_net-1", "ua-"])
def test_user_alias_is_kept(alias: str) -> None:
    assert parse_domain(MINIMAL.replace("ua-net0", alias)).devices.interfaces[0].alias == alias


def test_user_aliases_are_unique() -> None:
    xml = MINIMAL.replace("</devices>", """<interface type='user'><model type='virtio'/>
      <alias name='ua-net0'/></interface></devices>""")
    with pytest.raises(DomainInvalid, match="non unique alias detected: ua-net0"):
        validate_domain(parse_domain(xml))


def test_teaming_needs_the_failover_capability(corpus: Path) -> None:
    old = resolve(str(corpus / "caps" / "libvirt-7.0.0" / "caps_4.1.0.x86_64.xml"))
    new = resolve(str(corpus / "caps" / "libvirt-7.0.0" / "caps_4.2.0.x86_64.xml"))
    dom = parse_domain((corpus / "cases" / "net-virtio-teaming" / "libvirt-7.0.0" / "net-virtio-teaming.xml")
                       .read_bytes())
    with pytest.raises(UnsupportedByQemu) as err:
        validate_domain(dom, old)
    assert TEAMING_UNSUPPORTED in str(err.value)
    validate_domain(dom, new)


def test_i8042_needs_qemu_7(corpus: Path) -> None:
    dom = parse_domain((corpus / "cases" / "machine-i8042-off" / "machine-i8042-off.xml").read_bytes())
    with pytest.raises(UnsupportedByQemu, match="ps2 feature state cannot be controlled"):
        validate_domain(dom, resolve(str(corpus / "caps" / "libvirt-11.3.0" / "caps_6.2.0_x86_64.xml")))
    validate_domain(dom, resolve(str(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64.xml")))


def test_virtio_iommu_on_x86_needs_qemu_6_2(corpus: Path) -> None:
    dom = parse_domain((corpus / "cases" / "virtio-iommu-x86_64" / "virtio-iommu-x86_64.xml").read_bytes())
    with pytest.raises(UnsupportedByQemu, match="virtio"):
        validate_domain(dom, resolve(str(corpus / "caps" / "libvirt-9.0.0" / "caps_6.1.0.x86_64.xml")))


@pytest.mark.parametrize("memory", ["", "<memory unit='KiB'>0</memory>",
                                    "<maxMemory slots='4' unit='GiB'>4</maxMemory>"])
def test_no_initial_memory_is_libvirts_xml_error(memory: str) -> None:
    """virDomainDefPostParseMemory: a domain without initial memory (no <memory>, or 0, and no NUMA cells giving
    it; a <maxMemory> alone does not) is refused with libvirt's message."""
    xml = (f"<domain type='qemu'><name>g</name>{memory}<os><type arch='x86_64' machine='pc'>hvm</type></os>"
           "<devices/></domain>")
    with pytest.raises(DomainInvalid, match="XML error: Memory size must be specified via <memory> or in the <numa> "
                                            "configuration"):
        parse_domain(xml)
    cells = "<vcpu>1</vcpu><cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'/></numa></cpu>"
    assert parse_domain(xml.replace("<os>", f"{cells}<os>")).cpu is not None
