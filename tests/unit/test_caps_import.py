"""Importing libvirt's capability XML, including flags libvirt retired."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.caps.fixture import from_xml, to_xml
from conformance.caps.libvirt_import import import_libvirt_caps, min_qemu_for
from conformance.caps.model import QemuVersion
from conformance.errors import FixtureError


def test_every_corpus_caps_file_imports(corpus: Path) -> None:
    files = sorted((corpus / "caps").glob("libvirt-*/caps_*.xml"))
    assert len(files) >= 20
    for path in files:
        caps = import_libvirt_caps(path)
        assert caps.arch in path.name and caps.machines, path
        assert from_xml(to_xml(caps)) == caps, f"round trip of the import of {path}"
        # failover: exactly the QEMU releases from 4.2.0 on (4.1.50 is the 4.2 development snapshot)
        expected = caps.version >= QemuVersion(4, 1, 50) and caps.arch in ("x86_64", "aarch64", "s390x")
        assert caps.has("virtio-net.failover") == expected, f"{path}: QEMU {caps.version}"


def test_failover_implied_after_libvirt_retired_it(corpus: Path) -> None:
    explicit = import_libvirt_caps(corpus / "caps/libvirt-7.0.0/caps_4.2.0.x86_64.xml")
    retired = import_libvirt_caps(corpus / "caps/libvirt-9.0.0/caps_4.2.0.x86_64.xml")
    assert explicit.has("virtio-net.failover") and retired.has("virtio-net.failover")
    assert "virtio-net.failover" not in {i.flag for i in explicit.provenance.implied}
    implied = {i.flag: i.reason for i in retired.provenance.implied}
    assert "virtio-net.failover" in implied and "libvirt 9.0.0" in implied["virtio-net.failover"]
    assert retired.has_property("virtio-net-pci", "failover")
    assert retired.provenance.libvirt_version == "9.0.0"


def test_libvirt_version_from_selfvers_wins_over_path(corpus: Path, tmp_path: Path) -> None:
    text = (corpus / "caps/libvirt-9.0.0/caps_4.2.0.x86_64.xml").read_text()
    copy = tmp_path / "host-cache.xml"
    copy.write_text(text.replace("<selfvers>0</selfvers>", "<selfvers>9000000</selfvers>"))
    assert import_libvirt_caps(copy).provenance.libvirt_version == "9.0.0"


def test_libvirt_version_inferred_without_any_hint(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "anon.xml"
    copy.write_text((corpus / "caps/libvirt-11.3.0/caps_7.2.0_x86_64.xml").read_text())
    caps = import_libvirt_caps(copy)
    assert caps.has("virtio-net.failover") and caps.has("object.qapified")
    assert caps.provenance.libvirt_version is not None
    # a lower bound: the newest retirement step all of whose flags are missing (9.8.0 .. 11.3.0 here)
    assert QemuVersion.parse(caps.provenance.libvirt_version) >= QemuVersion(9, 8, 0)
    plain = tmp_path / "old.xml"
    plain.write_text((corpus / "caps/libvirt-7.0.0/caps_4.1.0.x86_64.xml").read_text())
    assert not import_libvirt_caps(plain).has("virtio-net.failover")


def test_min_qemu_table() -> None:
    assert min_qemu_for("9.0.0") == QemuVersion(4, 2, 0)
    assert min_qemu_for("11.3.0") == QemuVersion(6, 2, 0)
    assert min_qemu_for("7.0.0") == QemuVersion(1, 5, 0)


def test_libvirt_device_json_names(corpus: Path) -> None:
    # libvirt's device.json+hotplug is our device.json; libvirt's 6.2-era device.json is not
    assert import_libvirt_caps(corpus / "caps/libvirt-11.3.0/caps_7.0.0_x86_64.xml").has("device.json")
    assert not import_libvirt_caps(corpus / "caps/libvirt-11.3.0/caps_6.2.0_x86_64.xml").has("device.json")
    assert not import_libvirt_caps(corpus / "caps/libvirt-9.0.0/caps_6.2.0.x86_64.xml").has("device.json")


@pytest.mark.parametrize(("text", "message"), [
    ("<qemuCaps><arch>x86_64</arch>", "malformed XML"),
    ("<domain/>", "not libvirt capability XML"),
    ("<qemuCaps><arch>x86_64</arch></qemuCaps>", "missing or malformed <version>"),
    ("<qemuCaps><version>4002000</version></qemuCaps>", "missing <arch>"),
])
def test_bad_libvirt_caps(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "caps.xml"
    path.write_text(text)
    with pytest.raises(FixtureError, match=message) as info:
        import_libvirt_caps(path)
    assert str(path) in str(info.value)


def test_import_carries_host_cpus_blockers_and_sev(corpus: Path) -> None:
    caps = import_libvirt_caps(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64+amdsev.xml")
    assert {h.accel for h in caps.host_cpus} == {"kvm", "tcg"}
    kvm = caps.host_cpu("kvm")
    assert kvm is not None and kvm.model == "base" and kvm.migratability
    family = next(p for p in kvm.properties if p.name == "family")
    assert family.type == "number" and int(family.value) >= 23  # an AMD Zen host
    assert caps.sev is not None and (caps.sev.cbitpos, caps.sev.reduced_phys_bits) == (51, 1)
    rome = {m.accel: m for m in caps.cpu_models if m.name == "EPYC-Rome"}
    assert set(rome) == {"kvm", "tcg"} and "xsaves" in rome["tcg"].blockers
    assert caps.has("cpu-unavailable-features") and caps.has("blockjob.backing-mask-protocol")


def test_import_keeps_tcg_default_cpu(corpus: Path) -> None:
    caps = import_libvirt_caps(corpus / "caps" / "libvirt-9.0.0" / "caps_4.2.0.s390x.xml")
    machine = caps.machine("s390-ccw-virtio-4.2")
    assert machine is not None
    assert (machine.default_cpu_for("kvm"), machine.default_cpu_for("tcg")) == ("host-s390x-cpu", "qemu-s390x-cpu")
