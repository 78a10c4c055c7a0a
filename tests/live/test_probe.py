"""Probing the host's real QEMU binaries over QMP (``probe_binary`` and ``qemu-conformance probe``).
The ways a probe fails, on fake binaries: tests/unit/test_caps_probe.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conformance.caps.probe import probe_binary

pytestmark = pytest.mark.live


@pytest.mark.smoke
def test_probe_x86_64_7_2(qemu_x86_64: Path) -> None:
    caps = probe_binary(qemu_x86_64)
    assert (caps.version.major, caps.version.minor) >= (7, 2)
    assert caps.arch == "x86_64"
    assert caps.package, "Debian's QEMU reports a package string"
    assert caps.has("virtio-net.failover")
    assert caps.has_property("virtio-net-pci", "failover")
    assert caps.has_property("vfio-pci", "failover_pair_id")
    q35 = caps.machine("q35")
    assert q35 is not None and q35.name.startswith("pc-q35-")
    assert caps.default_machine() is not None and caps.default_machine().name.startswith("pc-i440fx-")
    assert {"device_add", "query-pci", "migrate"} <= caps.commands
    assert {"FAILOVER_NEGOTIATED", "UNPLUG_PRIMARY", "MIGRATION"} <= caps.events
    assert "events" in caps.migration_capabilities
    assert caps.has("migration.wait-unplug") and caps.has("device.json") and caps.has("netdev.json")
    assert "tcg" in caps.accelerators
    assert any(c.name == "qemu64" for c in caps.cpu_models)
    assert caps.provenance.source == "probe" and caps.provenance.binary == str(qemu_x86_64)
    # the QAPI unions behind -netdev/-blockdev/-chardev
    assert caps.members("netdev", "user") is not None and "hostfwd" in caps.members("netdev", "user")
    assert caps.members("blockdev", "qcow2") is not None and "cache.direct" in caps.members("blockdev", "qcow2")
    assert caps.members("chardev", "socket") is not None and "addr.data.path" in caps.members("chardev", "socket")


@pytest.mark.smoke
def test_probe_aarch64_7_2(qemu_aarch64: Path) -> None:
    caps = probe_binary(qemu_aarch64, accel="tcg")
    assert caps.arch == "aarch64"
    assert caps.version >= caps.version.parse("7.2")
    assert caps.has("virtio-net.failover")
    virt = caps.machine("virt")
    assert virt is not None and virt.name.startswith("virt-")
    assert caps.has("pcie-root-port")
    assert any(c.name == "cortex-a57" for c in caps.cpu_models)
    assert caps.provenance.accel == "tcg"


def test_probe_cli_writes_fixture_and_is_quick(qemu_x86_64: Path, tmp_path: Path) -> None:
    out = tmp_path / "caps.xml"
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "probe", str(qemu_x86_64), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(b"<?xml")
    assert "x86_64" in proc.stderr and "flags" in proc.stderr
    # the fixture carries the TCG host CPU as libvirt's capabilities do (a second probe under TCG when KVM ran)
    from conformance.caps.fixture import read_fixture

    assert read_fixture(out).host_cpu("tcg") is not None


def test_probe_5_2_records_its_netdev_union() -> None:
    """QEMU 5.2 (a build of the suite's, where present) lacks netdev members 10.0 has: the check names them."""
    from conformance.argv.schema_check import property_problems
    from conformance.caps.store import resolve
    from conformance.paths import builds_dir

    binary = builds_dir() / "qemu-5.2" / "bin" / "qemu-system-x86_64"
    if not binary.exists():
        pytest.skip(f"no QEMU 5.2 build at {binary} (qemu-conformance builds)")
    caps = probe_binary(binary, accel="tcg")
    assert caps.version.minor == 2 and caps.version.major == 5
    from conformance.argv.qapi_check import schema_of

    schema = schema_of(caps)  # the QAPI schema is recorded: netdev_add is a union from 5.0, object-add from 6.0
    assert schema is not None and schema.qapified("netdev") and not schema.qapified("object")
    # the stored 5.2.0 fixture took its schema from libvirt's .replies of an upstream build: the same text
    assert caps.qapi_schema == resolve("5.2.0:x86_64").qapi_schema
    vdpa = '{"type":"vhost-vdpa","id":"n0","vhostdev":"/dev/vhost-vdpa-0","vhostfd":"3"}'
    argv = ["qemu", "-netdev", vdpa, "-netdev", '{"type":"dgram","id":"n1"}']
    assert property_problems(argv, resolve("10.0.2:x86_64")) == []
    assert property_problems(argv, caps) == [
        f"-netdev vhost-vdpa: QEMU {caps.version} has no property 'vhostfd'",
        f"-netdev dgram: QEMU {caps.version} has no netdev type 'dgram'",
    ]


def test_probe_records_host_cpu_of_its_accelerator(qemu_x86_64: Path) -> None:
    caps = probe_binary(qemu_x86_64)
    accel = caps.provenance.accel
    assert accel in ("kvm", "tcg")
    host = caps.host_cpu(accel)  # type: ignore[arg-type]
    assert host is not None and host.model == "base" and host.migratability
    names = {p.name for p in host.properties}
    assert {"vendor", "family", "model", "stepping"} <= names
    assert any(p.enabled for p in host.properties)
    assert all(c.accel == accel for c in caps.cpu_models)
    assert caps.has("cpu-unavailable-features")
    # the CPU properties the flag rules name, not the hundreds of feature properties
    assert caps.type_properties["max-x86_64-cpu"] == {"unavailable-features": "strList", "migratable": "bool"}


def test_probe_asks_tcg_for_its_host_cpu_as_libvirt_does(qemu_x86_64: Path) -> None:
    """tcg_host_cpu: libvirt's second probe under TCG (the expansion of max, the TCG CPU models), which a KVM
    probe cannot answer; the host-model CPU of a type='qemu' domain is then built from it."""
    from conformance.argv import build_argv
    from conformance.domain.parse import parse_domain
    from conformance.domain.semantics import validate_domain

    caps = probe_binary(qemu_x86_64, tcg_host_cpu=True)
    tcg = caps.host_cpu("tcg")
    assert tcg is not None and tcg.model == "base" and tcg.migratability
    assert {"vendor", "family", "model"} <= {p.name for p in tcg.properties}
    assert caps.cpu_models_for("tcg") and all(c.accel == "tcg" for c in caps.cpu_models_for("tcg"))
    if caps.provenance.accel == "kvm":  # both halves, as libvirt's capabilities have them
        assert caps.host_cpu("kvm") is not None and caps.cpu_models_for("kvm") != caps.cpu_models_for("tcg")
    from conformance.argv.cpu_map import find_cpu_map
    from conformance.errors import UnsupportedByQemu

    try:
        find_cpu_map()
    except UnsupportedByQemu as exc:
        pytest.skip(f"a host-model CPU is decoded with libvirt's CPU map: {exc}")
    dom = parse_domain("<domain type='qemu'><name>h</name><memory unit='MiB'>256</memory><os><type arch='x86_64' "
                       "machine='pc'>hvm</type></os><cpu mode='host-model'/><devices><memballoon model='none'/>"
                       "</devices></domain>")
    validate_domain(dom, caps)
    argv = build_argv(dom, caps)
    assert argv[argv.index("-cpu") + 1].split(",")[0] not in ("", "host", "max")  # a named model, decoded
