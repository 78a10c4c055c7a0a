"""Domain + Capabilities -> argv: addresses, syntax switches, teaming, errors, and the libvirt corpus score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.argv import build_argv
from conformance.argv.command import argv_for_file, cli_argv, format_args, load_caps
from conformance.caps.store import resolve
from conformance.domain.parse import parse_domain
from conformance.domain.semantics import validate_domain
from conformance.errors import DomainInvalid, UnsupportedByQemu

TEAMING = """<domain type='qemu'>
  <name>team</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <memory unit='MiB'>512</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <controller type='usb' model='none'/>
    <interface type='user'>
      <mac address='52:54:00:11:22:33'/>
      <model type='virtio'/>
      <teaming type='persistent'/>
      <alias name='ua-standby0'/>
    </interface>
    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:11:22:33'/>
      <source><address type='pci' domain='0x0000' bus='0x03' slot='0x07' function='0x1'/></source>
      <teaming type='transient' persistent='ua-standby0'/>
    </interface>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def options(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]


def devices(argv: list[str]) -> list[dict]:
    """-device values as dicts, whichever syntax."""
    out = []
    for value in options(argv, "-device"):
        if value.startswith("{"):
            out.append(json.loads(value))
        else:
            driver, *rest = value.split(",")
            out.append({"driver": driver, **dict(kv.split("=", 1) for kv in rest)})
    return out


@pytest.fixture(scope="module")
def caps_62(corpus: Path):
    return load_caps(str(corpus / "caps" / "libvirt-11.3.0" / "caps_6.2.0_x86_64.xml"))


def argv_of(xml: str, caps) -> list[str]:
    dom = parse_domain(xml)
    validate_domain(dom, caps)
    return build_argv(dom, caps)


# --- syntax switches -----------------------------------------------------------------------


def test_json_device_and_netdev_on_new_qemu(caps_10) -> None:
    argv = argv_of(TEAMING, caps_10)
    assert all(v.startswith("{") for v in options(argv, "-device"))
    assert all(v.startswith("{") for v in options(argv, "-netdev"))
    assert json.loads(options(argv, "-object")[0])["qom-type"] == "memory-backend-ram"


def test_comma_syntax_on_62_despite_broken_device_json(caps_62) -> None:
    assert caps_62.has("device.json-broken-hotplug") or not caps_62.has("device.json")
    argv = argv_of(TEAMING, caps_62)
    assert not any(v.startswith("{") for v in options(argv, "-device"))
    assert "user,id=hostua-standby0" in options(argv, "-netdev")
    assert "-no-acpi" in argv  # pc-q35-6.2 has no acpi machine property


def test_machine_options_follow_machine_type(caps_10, caps_62) -> None:
    new = options(argv_of(TEAMING, caps_10), "-machine")[0]
    old = options(argv_of(TEAMING, caps_62), "-machine")[0]
    assert "memory-backend=pc.ram" in new and new.endswith("acpi=off")
    assert old.startswith("pc-q35-6.2,") and "acpi=" not in old


def test_probed_fixture_builds(capsdata: Path) -> None:
    fixture = capsdata / "qemu-7.2.22-x86_64.xml"
    if not fixture.exists():
        pytest.skip(f"{fixture} not stored")
    caps = resolve(str(fixture))
    argv = argv_of(TEAMING, caps)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert options(argv, "-machine")[0].startswith(caps.machine("q35").name)  # type: ignore[union-attr]
    nic = next(d for d in devices(argv) if d["driver"] == "virtio-net-pci")
    assert nic["failover"] in (True, "on")



@pytest.mark.parametrize("spec", ["7.2.22:x86_64", "7.2.0:x86_64"])
def test_numa_mem_follows_the_fixtures_machine(spec: str) -> None:
    """-numa node,mem= where the machine type takes it (query-machines numa-mem-supported, libvirt's
    numaMemSupported), memdev= elsewhere (qemuBuildNumaCommandLine)."""
    caps = resolve(spec)
    numa = ("<domain type='qemu'><name>n</name><memory unit='MiB'>512</memory><vcpu>2</vcpu>"
            "<os><type arch='x86_64' machine='{m}'>hvm</type></os><cpu><numa>"
            "<cell id='0' cpus='0' memory='256' unit='MiB'/><cell id='1' cpus='1' memory='256' unit='MiB'/>"
            "</numa></cpu><devices><memballoon model='none'/></devices></domain>")
    for name in ("pc-i440fx-5.0", "pc-q35-5.2"):
        machine = caps.machine(name)
        assert machine is not None
        nodes = options(argv_of(numa.format(m=name), caps), "-numa")
        assert ("mem=256" in nodes[0]) is machine.numa_mem, (name, nodes)
    assert caps.machine("pc-i440fx-5.0").numa_mem and not caps.machine("pc-q35-5.2").numa_mem  # type: ignore[union-attr]


@pytest.mark.parametrize(("cpus", "rest", "want"), [("0-0", "1-3", ["cpus=0"]), ("0,1,3", "2", ["cpus=0-1", "cpus=3"]),
                                                     ("0-1,2", "3", ["cpus=0-2"]),
                                                     ("0-3,^2", "2", ["cpus=0-1", "cpus=3"])])
def test_numa_cpus_are_written_from_the_parsed_set(cpus: str, rest: str, want: list[str]) -> None:
    """qemuBuildNumaCPUs writes a cell's CPUs from the bitmap, one run each: libvirt 9.0 ran cpus='0-0' as
    cpus=0 (found by the libvirt oracle, conformance/libvirt_oracle.py). A second cell names the other vCPUs
    (else node 0 would take them: qemuDomainDefNumaCPUsRectify)."""
    caps = resolve("7.2.22:x86_64")
    numa = ("<domain type='qemu'><name>n</name><memory unit='MiB'>512</memory><vcpu>4</vcpu>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os><cpu><numa>"
            f"<cell id='0' cpus='{cpus}' memory='256' unit='MiB'/><cell id='1' cpus='{rest}' memory='256' unit='MiB'/>"
            "</numa></cpu><devices><memballoon model='none'/></devices></domain>")
    node = options(argv_of(numa, caps), "-numa")[0]
    assert [p for p in node.split(",") if p.startswith("cpus=")] == want


@pytest.mark.parametrize(("model", "driver", "prop", "value"), [("vmvga", "vmware-svga", "vgamem_mb", 16),
                                                                ("bochs", "bochs-display", "vgamem", 16 << 20)])
def test_default_video_memory_is_16_mib(model: str, driver: str, prop: str, value: int) -> None:
    """virDomainVideoDefaultRAM: 16 MiB for a vmvga or bochs under QEMU, as libvirt 9.0 runs them (the libvirt
    oracle's finding: the suite wrote 4 MiB for vmvga and nothing for bochs)."""
    xml = ("<domain type='qemu'><name>v</name><memory unit='MiB'>256</memory>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
           f"<video><model type='{model}' heads='1' primary='yes'/></video><memballoon model='none'/></devices>"
           "</domain>")
    card = next(d for d in devices(argv_of(xml, resolve("7.2.22:x86_64"))) if d["driver"] == driver)
    assert card[prop] == value


# --- teaming -------------------------------------------------------------------------------


def test_teaming_argv(caps_10) -> None:
    devs = devices(argv_of(TEAMING, caps_10))
    standby = next(d for d in devs if d["driver"] == "virtio-net-pci")
    primary = next(d for d in devs if d["driver"] == "vfio-pci")
    assert standby["failover"] is True and standby["id"] == "ua-standby0"
    assert primary["failover_pair_id"] == "ua-standby0"
    assert primary["host"] == "0000:03:07.1"
    # both on their own pcie-root-port, as QEMU requires for a hidden primary
    ports = {d["id"] for d in devs if d["driver"] == "pcie-root-port"}
    assert standby["bus"] in ports and primary["bus"] in ports and standby["bus"] != primary["bus"]


def test_teaming_comma_syntax(caps_62) -> None:
    devs = devices(argv_of(TEAMING, caps_62))
    assert next(d for d in devs if d["driver"] == "virtio-net-pci")["failover"] == "on"
    assert next(d for d in devs if d["driver"] == "vfio-pci")["failover_pair_id"] == "ua-standby0"


def test_teaming_refused_without_failover(corpus: Path) -> None:
    caps = load_caps(str(corpus / "caps" / "libvirt-7.0.0" / "caps_4.1.0.x86_64.xml"))
    domain = corpus / "cases" / "net-virtio-teaming" / "libvirt-7.0.0" / "net-virtio-teaming.xml"
    with pytest.raises(UnsupportedByQemu, match="failover"):
        argv_for_file(domain, str(corpus / "caps" / "libvirt-7.0.0" / "caps_4.1.0.x86_64.xml"))
    assert not caps.has("virtio-net.failover")


# --- PCI addresses -------------------------------------------------------------------------


def test_i440fx_slots(caps_10) -> None:
    xml = TEAMING.replace("machine='q35'", "machine='pc'").replace("<memballoon model='none'/>", "")
    devs = devices(argv_of(xml, caps_10))
    addr = {d["driver"]: (d.get("bus"), d.get("addr")) for d in devs}
    assert addr["virtio-net-pci"] == ("pci.0", "0x2")  # slot 1 is the PIIX3, nets come first
    assert addr["vfio-pci"] == ("pci.0", "0x3")
    assert addr["virtio-balloon-pci"] == ("pci.0", "0x4")
    assert not any(d["driver"] == "pcie-root-port" for d in devs)


def test_q35_autoadds_root_ports_plus_one_spare(caps_10) -> None:
    devs = devices(argv_of(TEAMING, caps_10))
    ports = [d for d in devs if d["driver"] == "pcie-root-port"]
    assert [p["id"] for p in ports] == ["pci.1", "pci.2", "pci.3"]
    assert [p["addr"] for p in ports] == ["0x1", "0x1.0x1", "0x1.0x2"]
    assert ports[0]["multifunction"] is True and [p["port"] for p in ports] == [8, 9, 10]
    assert [p["chassis"] for p in ports] == [1, 2, 3]


def test_explicit_addresses_are_kept(caps_10) -> None:
    xml = TEAMING.replace("machine='q35'", "machine='pc'").replace(
        "<model type='virtio'/>",
        "<model type='virtio'/><address type='pci' domain='0x0000' bus='0x00' slot='0x09' function='0x0'/>")
    nic = next(d for d in devices(argv_of(xml, caps_10)) if d["driver"] == "virtio-net-pci")
    assert nic["addr"] == "0x9"


def test_conventional_pci_device_on_pcie_machine_gets_a_bridge(corpus: Path) -> None:
    caps = load_caps(str(corpus / "caps" / "libvirt-11.3.0" / "caps_8.2.0_aarch64.xml"))
    dom = parse_domain((corpus / "cases" / "aarch64-pci-serial" / "aarch64-pci-serial.xml").read_bytes())
    devs = devices(build_argv(dom, caps))
    bridge = next(d for d in devs if d["driver"] == "pcie-pci-bridge")
    serial = next(d for d in devs if d["driver"] == "pci-serial")
    assert serial["bus"] == bridge["id"] and serial["addr"] == "0x1"


def test_build_does_not_mutate_the_domain(caps_10) -> None:
    dom = parse_domain(TEAMING)
    before = repr(dom)
    first = build_argv(dom, caps_10)
    assert repr(dom) == before
    assert build_argv(dom, caps_10) == first


# --- errors --------------------------------------------------------------------------------


def test_unknown_device_model_is_a_clear_error(caps_10) -> None:
    xml = TEAMING.replace("<memballoon model='none'/>", "<video><model type='hologram'/></video>")
    with pytest.raises(DomainInvalid, match="unknown video model 'hologram'"):
        argv_of(xml, caps_10)
    xml = TEAMING.replace("<controller type='usb' model='none'/>", "<controller type='scsi' model='quantum'/>")
    with pytest.raises(DomainInvalid, match="unknown scsi controller model 'quantum'") as err:
        argv_of(xml, caps_10)
    assert err.value.line is not None


def test_cli_errors_are_one_line(tmp_path: Path, corpus: Path, capsys) -> None:
    from conformance.cli import main

    caps = str(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64.xml")
    assert main(["argv", str(tmp_path / "missing.xml"), "--caps", caps]) == 2
    err = capsys.readouterr().err
    assert "missing.xml" in err and "not found" in err and "Traceback" not in err
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain>\n<name>x</name>\n<oops>\n</domain>\n")
    assert main(["argv", str(bad), "--caps", caps]) == 2
    assert "bad.xml:" in capsys.readouterr().err


def test_cli_prints_args_style_and_json(tmp_path: Path, corpus: Path, capsys) -> None:
    import argparse

    domain = tmp_path / "team.xml"
    domain.write_text(TEAMING)
    caps = str(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64.xml")
    assert cli_argv(argparse.Namespace(domain=domain, caps=caps, json=True)) == 0
    argv = json.loads(capsys.readouterr().out)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert cli_argv(argparse.Namespace(domain=domain, caps=caps, json=False)) == 0
    text = capsys.readouterr().out
    assert text == format_args(argv)
    assert " \\\n-machine " in text and "'{\"driver\"" in text


@pytest.mark.parametrize(("spec", "lifecycle", "want"), [
    ("5.2.0:x86_64", "<on_reboot>destroy</on_reboot>", "-no-reboot"),
    ("5.2.0:x86_64", "<on_reboot>destroy</on_reboot><on_crash>restart</on_crash>", "-no-shutdown"),
    ("5.2.0:x86_64", "", "-no-shutdown"),
    ("7.2.0:x86_64", "<on_reboot>destroy</on_reboot>", "-no-shutdown"),  # set-action: actions over QMP
])
def test_no_reboot_before_set_action(spec: str, lifecycle: str, want: str) -> None:
    """qemuBuildPMCommandLine: a QEMU without set-action gets -no-reboot when the domain allows no reboot
    (qemuProcessRebootAllowed, libvirt's defaults for what is absent), else -no-shutdown."""
    xml = ("<domain type='qemu'><name>l</name><memory unit='MiB'>512</memory>"
           f"<os><type arch='x86_64' machine='pc'>hvm</type></os>{lifecycle}"
           "<devices><memballoon model='none'/></devices></domain>")
    argv = argv_of(xml, resolve(spec))
    assert want in argv and not {"-no-reboot", "-no-shutdown"} - {want} & set(argv)
