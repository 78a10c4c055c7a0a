"""Fixture files: round trip, stored fixtures, and clear errors on bad ones."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conformance.caps.fixture import from_xml, read_fixture, to_xml, write_fixture
from conformance.caps.model import Capabilities, MachineType, Provenance, QemuVersion
from conformance.caps.store import fixture_files, load, resolve
from conformance.errors import FixtureError


def _small() -> Capabilities:
    return Capabilities(
        version=QemuVersion(4, 2, 0), arch="x86_64", package="v4.2.0", accelerators=frozenset({"tcg"}),
        machines=(MachineType("pc-q35-4.2", alias="q35", max_cpus=288), MachineType("pc-i440fx-4.2", alias="pc",
                                                                                     is_default=True)),
        qom_types=frozenset({"virtio-net-pci", "vfio-pci"}),
        type_properties={"virtio-net-pci": {"failover": "bool", "mac": "str"}},
        commands=frozenset({"device_add"}), events=frozenset({"FAILOVER_NEGOTIATED"}),
        schema=frozenset({"device_add/$json-cli-hotplug"}), extra_flags=frozenset({"libvirt-only"}),
        provenance=Provenance(source="probe", binary="/usr/bin/qemu-system-x86_64"),
    )


def test_round_trip_small(tmp_path: Path) -> None:
    caps = _small()
    path = write_fixture(caps, tmp_path / "f.xml")
    again = read_fixture(path)
    assert again == caps
    assert again.has("virtio-net.failover") and again.has("device.json") and again.has("libvirt-only")
    assert again.machine("q35").name == "pc-q35-4.2"
    assert again.default_machine().name == "pc-i440fx-4.2"


def test_round_trip_every_stored_fixture(capsdata: Path) -> None:
    paths = fixture_files(capsdata)
    assert len(paths) >= 12, "the stored fixtures: probed 7.2/10.0 and the imported versions"
    for path in paths:
        caps = read_fixture(path)
        assert from_xml(to_xml(caps), path) == caps, path.name
        assert path.name == f"qemu-{caps.version}-{caps.arch}.xml"


def test_stored_fixtures_cover_the_required_versions(capsdata: Path) -> None:
    have = {(str(c.version), c.arch) for c in map(load, fixture_files(capsdata))}
    for version, arch in [("4.2.0", "x86_64"), ("4.2.0", "aarch64"), ("4.1.0", "x86_64"), ("5.2.0", "x86_64"),
                          ("6.2.0", "x86_64"), ("7.0.0", "x86_64"), ("8.1.0", "x86_64"), ("8.2.0", "aarch64"),
                          ("10.0.0", "x86_64")]:
        assert (version, arch) in have, f"{version} {arch} missing from capsdata/"
    probed = [c for c in map(load, fixture_files(capsdata)) if c.provenance.source == "probe"]
    assert {(c.version.major, c.version.minor, c.arch) for c in probed} >= {
        (7, 2, "x86_64"), (7, 2, "aarch64"), (10, 0, "x86_64")}


def test_resolve_version_arch(capsdata: Path) -> None:
    assert str(resolve("4.2.0:x86_64").version) == "4.2.0"
    assert resolve("7.2:aarch64").version.minor == 2
    latest = resolve("latest:x86_64")
    assert all(load(p).version <= latest.version for p in fixture_files(capsdata) if load(p).arch == "x86_64")
    with pytest.raises(FixtureError, match=r"no stored fixture for 3\.0\.0:x86_64"):
        resolve("3.0.0:x86_64")
    with pytest.raises(FixtureError, match="VERSION:ARCH"):
        resolve("nonsense")


@pytest.mark.parametrize(("text", "message", "line"), [
    (b"<qemu-capabilities format='1'><version", "malformed XML", 1),
    (b"<qemuCaps/>", "caps import", 1),
    (b"<qemu-capabilities format='7'/>", "unknown fixture format '7'", 1),
    (b"<qemu-capabilities format='1'>\n<arch>x86_64</arch>\n<provenance source='probe'/>\n</qemu-capabilities>",
     "missing <version>", 1),
    (b"<qemu-capabilities format='1'>\n<version major='0' minor='1' micro='0'/>\n</qemu-capabilities>",
     "unknown QEMU version 0.1.0", 2),
    (b"<qemu-capabilities format='1'>\n<version major='x' minor='1' micro='0'/>\n</qemu-capabilities>",
     "is not a number", 2),
])
def test_bad_fixture_errors_name_file_and_line(tmp_path: Path, text: bytes, message: str, line: int) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(text)
    with pytest.raises(FixtureError) as info:
        read_fixture(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.line == line


def test_missing_fixture(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="not found"):
        read_fixture(tmp_path / "none.xml")


def test_round_trip_host_cpus_sev_and_per_accel_models(tmp_path: Path) -> None:
    from conformance.caps.model import CpuModel, CpuProperty, HostCpu, SevInfo

    props = (CpuProperty("vendor", "string", "AuthenticAMD"), CpuProperty("family", "number", "23"),
             CpuProperty("invtsc", "boolean", "true", False), CpuProperty("aes", "boolean", "true", True),
             CpuProperty("avx512f", "boolean", "false"))
    caps = replace(_small(), host_cpus=(HostCpu("tcg", "base", True, props), HostCpu("kvm", "host", False, ())),
                   sev=SevInfo(cbitpos=51, reduced_phys_bits=1),
                   cpu_models=(CpuModel("EPYC", "EPYC-x86_64-cpu", False, blockers=("xsaves", "ibpb"), accel="kvm"),
                               CpuModel("EPYC", "EPYC-x86_64-cpu", True, accel="tcg")),
                   machines=(MachineType("s390-ccw-virtio-4.2", default_cpu="host-s390x-cpu",
                                         default_cpu_tcg="qemu-s390x-cpu"),))
    again = read_fixture(write_fixture(caps, tmp_path / "f.xml"))
    assert again == caps
    assert [h.accel for h in again.host_cpus] == ["kvm", "tcg"]
    tcg = again.host_cpu("tcg")
    assert tcg is not None and tcg.migratability and {p.name for p in tcg.properties} == {p.name for p in props}
    assert next(p for p in tcg.properties if p.name == "invtsc").migratable is False
    assert again.sev == SevInfo(51, 1)
    assert [m.blockers for m in again.cpu_models_for("kvm")] == [("xsaves", "ibpb")]
    assert again.machines[0].default_cpu_for("tcg") == "qemu-s390x-cpu"
    assert again.machines[0].default_cpu_for("kvm") == "host-s390x-cpu"


def test_round_trip_option_members(tmp_path: Path) -> None:
    members = {"blockdev": {"": {"cache.direct": "boolean", "driver": "string"},
                            "file": {"filename": "string"}, "null-co": {}},
               "netdev": {"": {"id": "string"}, "user": {"guestfwd": "array"}}}
    caps = replace(_small(), option_members=members)
    text = to_xml(caps)
    assert text.count(b"<branch ") == 3 and b'<member name="cache.direct" type="boolean"/>' in text
    again = from_xml(text)
    assert again == caps and again.option_members == members
    assert again.members("blockdev", "file") == {"cache.direct": "boolean", "driver": "string", "filename": "string"}
    assert again.members("blockdev", "nbd") is None
    assert "blockdev:null-co.driver" in again.facts("option members")
    assert b"option-members" not in to_xml(_small()) and from_xml(to_xml(_small())).option_members == {}


def test_fixture_without_host_cpus_still_loads(tmp_path: Path) -> None:
    text = to_xml(_small())
    assert b"host-cpus" not in text and b"<sev" not in text
    caps = from_xml(text)
    assert caps.host_cpus == () and caps.sev is None and caps.host_cpu("kvm") is None
