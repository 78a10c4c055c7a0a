"""argv rules added with the host-model work: SPICE, USB redirection, default audio, SEV platform facts,
raw disks without a format node, the harness's fixed values, firmware auto-selection, s390 CCW."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from conformance.argv import build_argv
from conformance.argv.command import load_caps
from conformance.argv.firmware import ENV_FIRMWARE_DIRS
from conformance.caps.model import SevInfo
from conformance.domain.parse import parse_domain
from conformance.domain.semantics import validate_domain
from conformance.errors import DomainInvalid, UnsupportedByQemu


@pytest.fixture(scope="module")
def caps_aarch64(corpus: Path):
    return load_caps(str(corpus / "caps" / "libvirt-11.3.0" / "caps_8.2.0_aarch64.xml"))


def domain(devices: str = "", *, os_extra: str = "", os_attrs: str = "", arch: str = "x86_64",
           machine: str = "q35", extra: str = "", dtype: str = "kvm") -> str:
    return f"""<domain type='{dtype}'>
  <name>guest</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <memory unit='MiB'>512</memory>
  <os{os_attrs}><type arch='{arch}' machine='{machine}'>hvm</type>{os_extra}</os>
  {extra}
  <devices>
    <controller type='usb' model='qemu-xhci'/>
    {devices}
    <memballoon model='none'/>
  </devices>
</domain>"""


def argv_of(xml: str, caps) -> list[str]:
    dom = parse_domain(xml)
    validate_domain(dom, caps)
    return build_argv(dom, caps)


def opts(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]


def test_spice_autoport_takes_libvirts_pretend_port_and_spice_audio(caps_10) -> None:
    argv = argv_of(domain("<graphics type='spice' autoport='yes'><image compression='off'/></graphics>"), caps_10)
    assert opts(argv, "-spice") == ["port=5901,addr=127.0.0.1,image-compression=off,seamless-migration=on"]
    assert json.loads(opts(argv, "-audiodev")[0]) == {"id": "audio1", "driver": "spice"}


def test_spice_tls_channels_and_listen(caps_10) -> None:
    xml = domain("<graphics type='spice' port='5903' tlsPort='5904' defaultMode='secure'>"
                 "<listen type='address' address='0.0.0.0'/><channel name='main' mode='insecure'/>"
                 "<clipboard copypaste='no'/><mouse mode='client'/></graphics>")
    assert opts(argv_of(xml, caps_10), "-spice") == [
        "port=5903,tls-port=5904,addr=0.0.0.0,agent-mouse=on,x509-dir=/etc/pki/libvirt-spice,"
        "tls-channel=default,plaintext-channel=main,disable-copy-paste=on,seamless-migration=on"]


def test_spice_refused_without_the_capability(caps_10) -> None:
    no_spice = replace(caps_10, commands=caps_10.commands - {"query-spice"},
                       extra_flags=caps_10.extra_flags - {"spice"})
    with pytest.raises(UnsupportedByQemu, match="spice graphics are not supported"):
        argv_of(domain("<graphics type='spice' autoport='yes'/>"), no_spice)


def test_default_audio_follows_the_graphics(caps_10) -> None:
    assert json.loads(opts(argv_of(domain("<graphics type='vnc'/>"), caps_10), "-audiodev")[0])["driver"] == "none"
    assert json.loads(opts(argv_of(domain(), caps_10), "-audiodev")[0])["driver"] == "none"


def test_usb_redirection_with_filter(caps_10) -> None:
    xml = domain("<graphics type='spice' autoport='yes'/>"
                 "<redirdev bus='usb' type='spicevmc'/><redirdev bus='usb' type='spicevmc'/>"
                 "<redirfilter><usbdev class='0x08' vendor='0x1234' product='0xbeef' version='2.0' allow='yes'/>"
                 "<usbdev allow='no'/></redirfilter>")
    argv = argv_of(xml, caps_10)
    assert "spicevmc,id=charredir0,name=usbredir" in opts(argv, "-chardev")
    redirs = [json.loads(v) for v in opts(argv, "-device") if "usb-redir" in v]
    assert [(r["id"], r["chardev"], r["bus"], r["port"]) for r in redirs] == [
        ("redir0", "charredir0", "usb.0", "1"), ("redir1", "charredir1", "usb.0", "2")]
    assert redirs[0]["filter"] == "0x08:0x1234:0xBEEF:0x0200:1|-1:-1:-1:-1:0"


def test_spice_agent_channel_is_vdagent(caps_10) -> None:
    xml = domain("<controller type='virtio-serial' index='0'/><channel type='spicevmc'>"
                 "<target type='virtio' name='com.redhat.spice.0'/></channel><graphics type='spice'/>")
    assert "spicevmc,id=charchannel0,name=vdagent" in opts(argv_of(xml, caps_10), "-chardev")


def test_ich9_sound_sits_at_1b_on_q35(caps_10) -> None:
    argv = argv_of(domain("<sound model='ich9'/>"), caps_10)
    hda = next(json.loads(v) for v in opts(argv, "-device") if "ich9-intel-hda" in v)
    assert (hda["bus"], hda["addr"]) == ("pcie.0", "0x1b")


def test_sev_platform_facts_come_from_the_capabilities(caps_10) -> None:
    xml = domain(extra="<launchSecurity type='sev'><policy>0x0001</policy></launchSecurity>", machine="pc")
    sev = replace(caps_10, sev=SevInfo(cbitpos=51, reduced_phys_bits=1))
    obj = next(json.loads(v) for v in opts(argv_of(xml, sev), "-object") if "sev-guest" in v)
    assert (obj["cbitpos"], obj["reduced-phys-bits"]) == (51, 1)
    given = xml.replace("<policy>", "<cbitpos>47</cbitpos><reducedPhysBits>2</reducedPhysBits><policy>")
    obj = next(json.loads(v) for v in opts(argv_of(given, replace(caps_10, sev=None)), "-object") if "sev" in v)
    assert (obj["cbitpos"], obj["reduced-phys-bits"]) == (47, 2)
    with pytest.raises(UnsupportedByQemu, match="SEV platform info"):
        argv_of(xml, replace(caps_10, sev=None))


def test_raw_disk_format_node_depends_on_the_block_job_capability(caps_10, caps_aarch64) -> None:
    disk = "<disk type='file' device='disk'><source file='/a.raw'/><target dev='vda' bus='virtio'/></disk>"
    assert caps_10.has("blockjob.backing-mask-protocol") and not caps_aarch64.has("blockjob.backing-mask-protocol")
    new = [json.loads(v) for v in opts(argv_of(domain(disk), caps_10), "-blockdev")]
    assert [b["node-name"] for b in new] == ["libvirt-1-storage"] and new[0]["read-only"] is False
    old = [json.loads(v) for v in opts(argv_of(domain(disk, arch="aarch64", machine="virt"), caps_aarch64),
                                       "-blockdev")]
    assert [b["node-name"] for b in old] == ["libvirt-1-storage", "libvirt-1-format"]
    qcow2 = disk.replace("<source", "<driver name='qemu' type='qcow2'/><source")
    assert len(opts(argv_of(domain(qcow2), caps_10), "-blockdev")) == 2


def test_swtpm_socket_is_the_harness_path(caps_10) -> None:
    argv = argv_of(domain("<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"), caps_10)
    assert "socket,id=chrtpm,path=/dev/test" in opts(argv, "-chardev")


# --- firmware auto-selection from descriptors (our own descriptors, QEMU's interop format) ---------


def _descriptor(name: str, code: str, fmt: str, *, arch: str = "aarch64", machines: str = "virt-*",
                features: list[str] | None = None) -> dict:
    return {"description": name, "interface-types": ["uefi"],
            "mapping": {"device": "flash", "mode": "split", "executable": {"filename": code, "format": fmt},
                        "nvram-template": {"filename": code + ".vars", "format": fmt}},
            "targets": [{"architecture": arch, "machines": [machines]}], "features": features or [], "tags": []}


@pytest.fixture
def descriptors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    etc, share = tmp_path / "etc", tmp_path / "share"
    etc.mkdir()
    share.mkdir()
    (share / "50-qcow2.json").write_text(json.dumps(_descriptor("q", "/fw/code.qcow2", "qcow2")))
    (share / "51-raw.json").write_text(json.dumps(_descriptor("r", "/fw/code.raw", "raw")))
    (share / "52-x86-sb.json").write_text(json.dumps(
        _descriptor("sb", "/fw/ovmf.sb.fd", "raw", arch="x86_64", machines="pc-q35-*",
                    features=["secure-boot", "requires-smm", "enrolled-keys"])))
    (share / "53-x86.json").write_text(json.dumps(
        _descriptor("plain", "/fw/ovmf.fd", "raw", arch="x86_64", machines="pc-q35-*")))
    (etc / "51-raw.json").write_text("")  # masked
    monkeypatch.setenv(ENV_FIRMWARE_DIRS, f"{etc}:{share}")
    return tmp_path


def test_firmware_autoselection_keeps_raw_for_existing_definitions(caps_aarch64, descriptors: Path) -> None:
    xml = domain(os_attrs=" firmware='efi'", arch="aarch64", machine="virt-4.0", dtype="qemu")
    with pytest.raises(UnsupportedByQemu, match="no firmware descriptor fits"):
        argv_of(xml, caps_aarch64)  # the raw descriptor is masked, qcow2 is not taken for an old definition
    (descriptors / "etc" / "51-raw.json").unlink()
    from conformance.argv.firmware import load_descriptors

    load_descriptors.cache_clear()
    argv = argv_of(xml, caps_aarch64)
    nodes = [json.loads(v) for v in opts(argv, "-blockdev")]
    assert nodes[0]["filename"] == "/fw/code.raw"
    assert nodes[2]["filename"] == "/var/lib/libvirt/qemu/nvram/guest_VARS.fd"
    assert "pflash0=libvirt-pflash0-format,pflash1=libvirt-pflash1-format" in opts(argv, "-machine")[0]
    fmt = argv_of(xml.replace("</os>", "<nvram format='qcow2'/></os>"), caps_aarch64)
    assert json.loads(opts(fmt, "-blockdev")[0])["filename"] == "/fw/code.qcow2"


def test_firmware_features_pick_the_secure_boot_build(caps_10, descriptors: Path) -> None:
    sb = "<firmware><feature enabled='yes' name='secure-boot'/></firmware>"
    argv = argv_of(domain(os_attrs=" firmware='efi'", os_extra=sb, machine="pc-q35-10.0"), caps_10)
    assert json.loads(opts(argv, "-blockdev")[0])["filename"] == "/fw/ovmf.sb.fd"
    assert "smm=on" in opts(argv, "-machine")[0]
    assert "driver=cfi.pflash01,property=secure,value=on" in opts(argv, "-global")
    plain = argv_of(domain(os_attrs=" firmware='efi'", os_extra=sb.replace("yes", "no"), machine="pc-q35-10.0"),
                    caps_10)
    assert json.loads(opts(plain, "-blockdev")[0])["filename"] == "/fw/ovmf.fd"
    # the variable store of a raw build on QEMU 10 has no format node (like raw disks)
    assert "pflash1=libvirt-pflash1-storage" in opts(plain, "-machine")[0]


def test_firmware_autoselection_follows_the_loader_and_nvram_given(caps_10, descriptors: Path) -> None:
    """qemuFirmwareMatchDomain/qemuFirmwareMatchesPaths: <nvram template> must be the split build's template,
    a writable loader needs a combined build (never kept), and a BIOS has no NVRAM (virDomainDefOSValidate)."""
    efi = " firmware='efi'"
    template = argv_of(domain(os_attrs=efi, os_extra="<nvram template='/fw/ovmf.fd.vars'/>",
                              machine="pc-q35-10.0"), caps_10)
    assert json.loads(opts(template, "-blockdev")[0])["filename"] == "/fw/ovmf.fd"
    with pytest.raises(UnsupportedByQemu, match="Unable to find 'efi' firmware that is compatible"):
        argv_of(domain(os_attrs=efi, os_extra="<nvram template='/elsewhere/VARS.fd'/>", machine="pc-q35-10.0"),
                caps_10)
    with pytest.raises(UnsupportedByQemu, match="Unable to find 'efi' firmware that is compatible"):
        argv_of(domain(os_attrs=efi, os_extra="<loader readonly='no'/>", machine="pc-q35-10.0"), caps_10)
    with pytest.raises(Exception, match="firmware type 'bios' does not support nvram"):
        argv_of(domain(os_attrs=" firmware='bios'", os_extra="<nvram>/var/VARS.fd</nvram>", machine="pc"), caps_10)


def test_pvpanic_is_an_integrated_device_on_the_root_bus(caps_aarch64) -> None:
    """pvpanic-pci is a conventional PCI device flagged integrated: pcie-root takes it (bus 0, no bridge added,
    virDomainPCIAddressFlagsCompatible); with any other address type libvirt refuses it after assignment."""
    xml = domain("<panic model='pvpanic'/>", arch="aarch64", machine="virt", dtype="qemu")
    xml = xml.replace("<controller type='usb' model='qemu-xhci'/>", "<controller type='usb' model='none'/>")
    devs = [json.loads(d) for d in opts(argv_of(xml, caps_aarch64), "-device") if d.startswith("{")]
    assert {"driver": "pvpanic-pci", "bus": "pcie.0", "addr": "0x1"}.items() <= next(
        d for d in devs if d["driver"] == "pvpanic-pci").items()
    assert not [d for d in devs if d["driver"] == "pcie-pci-bridge"]
    with pytest.raises(UnsupportedByQemu, match="pvpanic is supported only with PCI address type"):
        argv_of(xml.replace("<panic model='pvpanic'/>",
                            "<panic model='pvpanic'><address type='isa' iobase='0x505'/></panic>"), caps_aarch64)


def test_rom_loader_is_bios(caps_10) -> None:
    argv = argv_of(domain(os_extra="<loader>/usr/share/seabios/bios.bin</loader>", machine="pc"), caps_10)
    assert opts(argv, "-bios") == ["/usr/share/seabios/bios.bin"]


def test_s390_virtio_devices_get_ccw_addresses(corpus: Path) -> None:
    caps = load_caps(str(corpus / "caps" / "libvirt-9.0.0" / "caps_4.2.0.s390x.xml"))
    xml = """<domain type='qemu'><name>g</name><memory unit='MiB'>256</memory>
      <os><type arch='s390x' machine='s390-ccw-virtio'>hvm</type></os>
      <devices>
        <disk type='block' device='disk'><source dev='/dev/a'/><target dev='vda' bus='virtio'/></disk>
        <disk type='block' device='disk'><source dev='/dev/b'/><target dev='vdb' bus='virtio'/>
          <address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0000'/></disk>
        <controller type='usb' model='none'/>
      </devices></domain>"""
    argv = argv_of(xml, caps)
    devnos = [d.split("devno=")[1].split(",")[0] for d in opts(argv, "-device") if "devno=" in d]
    assert devnos == ["fe.0.0001", "fe.0.0000", "fe.0.0002"]  # vda, vdb (given), the balloon
    assert opts(argv, "-cpu") == ["qemu"]  # TCG's default CPU of the s390 machine, not KVM's 'host'


@pytest.mark.parametrize("dev", [
    "<filesystem type='mount' accessmode='passthrough' model='virtio-transitional'>"
    "<source dir='/export/fs1'/><target dir='fs1'/></filesystem>",
    "<hostdev mode='subsystem' type='scsi_host' managed='no' model='virtio-transitional'>"
    "<source protocol='vhost' wwpn='naa.5123456789abcde0'/></hostdev>",
    "<vsock model='virtio-transitional'><cid auto='no' address='4'/></vsock>",
])
def test_transitional_virtio_takes_a_conventional_pci_slot(caps_10, dev: str) -> None:
    """qemuDomainDeviceCalculatePCIConnectFlags: a transitional virtio device (here a 9p filesystem, vhost-scsi,
    vsock) only works in a conventional PCI slot, so on q35 the builder adds a root port with a pcie-pci-bridge
    (grown together, virDomainPCIAddressSetGrow) and the device lands on the bridge; the spare hotplug root
    port comes after."""
    xml = domain(dev).replace("<controller type='usb' model='qemu-xhci'/>", "<controller type='usb' model='none'/>")
    devs = [json.loads(d) for d in opts(argv_of(xml, caps_10), "-device") if d.startswith("{")]
    bridge = next(d for d in devs if d["driver"] == "pcie-pci-bridge")
    assert bridge["id"] == "pci.2" and bridge["bus"] == "pci.1"
    transitional = next(d for d in devs if d["driver"].endswith("-pci-transitional"))
    assert transitional["bus"] == "pci.2"
    assert [d["id"] for d in devs if d["driver"] == "pcie-root-port"] == ["pci.1", "pci.3"]


def test_numa_vcpus_no_cell_names_go_to_node_0(caps_10) -> None:
    """qemuDomainDefNumaCPUsRectify: when the cells name fewer CPUs than the domain has, node 0 takes all the
    others (virDomainNumaFillCPUsInNode)."""
    cells = ("<cpu><numa><cell id='0' cpus='0' memory='262144' unit='KiB'/>"
             "<cell id='1' cpus='2-4,6' memory='262144' unit='KiB'/></numa></cpu>")
    xml = domain(extra=cells).replace("<os>", "<vcpu>12</vcpu><os>")
    nodes = [o for o in opts(argv_of(xml, caps_10), "-numa") if o.startswith("node")]
    assert nodes[0].startswith("node,nodeid=0,cpus=0-1,cpus=5,cpus=7-11,")
    assert nodes[1].startswith("node,nodeid=1,cpus=2-4,cpus=6,")


def test_auto_vcpu_placement_without_numatune_binds_memory_to_numads_nodes(caps_10) -> None:
    """virDomainNumatuneParseXML: vCPUs placed by numad and no <numatune><memory>: the memory placement is
    automatic too, so the RAM backend is bound to numad's advice (the harness's: every host node)."""
    xml = domain(machine="pc").replace("<os>", "<vcpu placement='auto'>2</vcpu><os>")
    ram = json.loads(opts(argv_of(xml, caps_10), "-object")[-1])
    assert ram["qom-type"] == "memory-backend-ram" and ram["policy"] == "bind"
    assert ram["host-nodes"] == [0, 1, 2, 3]
    static = domain(machine="pc").replace("<os>", "<vcpu>2</vcpu><os>")
    assert all("host-nodes" not in o for o in opts(argv_of(static, caps_10), "-object"))


def test_a_virtio_mmio_device_takes_the_others_to_virtio_mmio(caps_aarch64) -> None:
    """qemuDomainAssignVirtioMMIOAddresses: on an Arm virt guest that has a virtio-mmio device, the virtio devices
    without an address (here the virtio-serial controller added for a channel) go on virtio-mmio too, so no
    PCIe root port is added for them; without one they take PCI addresses."""
    devices = ("<disk type='file' device='disk'><source file='/a.qcow2'/><target dev='vda' bus='virtio'/>"
               "<address type='virtio-mmio'/></disk>"
               "<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/>"
               "</channel>")
    xml = domain(devices, arch="aarch64", machine="virt", dtype="qemu").replace(
        "<controller type='usb' model='qemu-xhci'/>", "<controller type='usb' model='none'/>")
    devs = [json.loads(d) for d in opts(argv_of(xml, caps_aarch64), "-device") if d.startswith("{")]
    assert {"driver": "virtio-serial-device", "id": "virtio-serial0"} in devs
    assert not [d for d in devs if d["driver"] == "pcie-root-port"]
    pci = [json.loads(d) for d in opts(argv_of(xml.replace("<address type='virtio-mmio'/>", ""), caps_aarch64),
                                       "-device") if d.startswith("{")]
    assert next(d for d in pci if d["id"] == "virtio-serial0")["driver"] == "virtio-serial-pci"


def test_vnc_socket_in_libvirts_own_folder_is_dropped(caps_10) -> None:
    """qemuDomainRecheckInternalPaths: a VNC socket path in libvirt's state folder (cfg->libDir), not marked
    autoGenerated, is one an older libvirt generated; a new definition listens on the default address instead.
    A socket elsewhere stays."""
    vnc = "<graphics type='vnc' socket='{}'/>"
    dropped = argv_of(domain(vnc.format("/var/lib/libvirt/qemu/domain-99-guest/old.socket")), caps_10)
    assert opts(dropped, "-vnc")[0].startswith("127.0.0.1:0")
    kept = argv_of(domain(vnc.format("/run/vnc/guest.socket")), caps_10)
    assert opts(kept, "-vnc")[0].startswith("vnc=unix:/run/vnc/guest.socket")


SCSI_HOSTDEV = ("<hostdev mode='subsystem' type='scsi' managed='yes'><source><adapter name='scsi_host0'/>"
                "<address bus='0' target='0' unit='{n}'/></source>{addr}</hostdev>")


def test_scsi_hostdevs_fill_seven_units_per_controller_then_add_one(caps_10) -> None:
    """virDomainHostdevAssignAddress: a SCSI host device without an address takes the first free unit of
    controller 0, 1, ... (7 per controller, units given elsewhere skipped); virDomainDefMaybeAddHostdevSCSIcontroller
    then adds the controllers up to the highest, of the model found; each is a scsi-generic on a host_device
    backend numbered after the disks (qemuBuildHostdevSCSICommandLine; /dev/sg0 is the harness's node)."""
    given = "<address type='drive' controller='1' bus='0' target='0' unit='0'/>"
    devices = ("<controller type='scsi' index='0' model='virtio-scsi'/>"
               + "".join(SCSI_HOSTDEV.format(n=n, addr="") for n in range(8))
               + SCSI_HOSTDEV.format(n=8, addr=given) + SCSI_HOSTDEV.format(n=9, addr=""))
    argv = argv_of(domain(devices, machine="pc"), caps_10)
    devs = [json.loads(d) for d in opts(argv, "-device") if d.startswith("{")]
    assert [d["id"] for d in devs if d["driver"] == "virtio-scsi-pci"] == ["scsi0", "scsi1"]
    generic = [d for d in devs if d["driver"] == "scsi-generic"]
    assert [(d["bus"], d["lun"]) for d in generic] == [("scsi0.0", u) for u in range(7)] + [
        ("scsi1.0", 1), ("scsi1.0", 0), ("scsi1.0", 2)]
    backends = [json.loads(b) for b in opts(argv, "-blockdev")]
    assert backends[0] == {"driver": "host_device", "filename": "/dev/sg0", "node-name": "libvirt-1-backend",
                           "read-only": False}
    assert generic[0]["drive"] == "libvirt-1-backend" and generic[-1]["drive"] == "libvirt-10-backend"


def test_scsi_disk_and_hostdev_addresses_may_not_meet(caps_10) -> None:
    """virDomainDiskDefAssignAddress / virDomainHostdevDefPostParse: a SCSI disk's derived address may not be a
    host device's, and a host device's address may not be a SCSI disk's."""
    disk = "<disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='sda' bus='scsi'/>{}</disk>"
    given = "<address type='drive' controller='0' bus='0' target='0' unit='0'/>"
    with pytest.raises(DomainInvalid, match="using disk target name 'sda' conflicts with SCSI host device"):
        argv_of(domain(disk.format("") + SCSI_HOSTDEV.format(n=0, addr=given), machine="pc"), caps_10)
    with pytest.raises(DomainInvalid, match="in use by a SCSI disk"):
        argv_of(domain(disk.format(given) + SCSI_HOSTDEV.format(n=0, addr=given), machine="pc"), caps_10)
    with pytest.raises(DomainInvalid, match="in use by another SCSI host device"):  # virDomainDefHostdevValidate
        argv_of(domain(SCSI_HOSTDEV.format(n=0, addr=given) + SCSI_HOSTDEV.format(n=1, addr=given), machine="pc"),
                caps_10)


def test_sev_snp_guest_object_and_its_place_on_the_machine(caps_10) -> None:
    """qemuBuildSEVSNPCommandLine: a sev-snp-guest object (vcek inverted into vcek-disabled, absent attributes
    left out); qemuBuildMachineCommandLine puts confidential-guest-support before the pflash nodes."""
    ls = ("<launchSecurity type='sev-snp' authorKey='yes' vcek='no'><cbitpos>47</cbitpos>"
          "<reducedPhysBits>1</reducedPhysBits><policy>0x00030000</policy><hostData>aGk=</hostData></launchSecurity>")
    loader = "<loader readonly='yes' type='pflash' stateless='yes'>/fw/OVMF.amdsev.fd</loader>"
    argv = argv_of(domain(extra=ls + "<features><acpi/></features>", os_extra=loader, machine="pc-q35-8.2"), caps_10)
    snp = json.loads(next(o for o in opts(argv, "-object") if "sev-snp-guest" in o))
    assert snp == {"qom-type": "sev-snp-guest", "id": "lsec0", "cbitpos": 47, "reduced-phys-bits": 1,
                   "policy": 0x30000, "host-data": "aGk=", "author-key-enabled": True, "vcek-disabled": True}
    machine = opts(argv, "-machine")[0]
    assert machine.index("confidential-guest-support=lsec0") < machine.index("pflash0=")


def test_a_new_definition_may_autoselect_a_qcow2_build(caps_aarch64, descriptors: Path) -> None:
    """qemuDomainDefBootPostParse: only a loaded definition is held to raw images; a new one (libvirt's
    ABI_UPDATE parse, the batch protocol's "abi_update") takes the first descriptor that fits, here qcow2."""
    from conformance.argv.batch import answer
    from conformance.argv.firmware import NEW_DEFINITION, load_descriptors

    (descriptors / "etc" / "51-raw.json").unlink()
    load_descriptors.cache_clear()
    xml = domain(os_attrs=" firmware='efi'", arch="aarch64", machine="virt-4.0", dtype="qemu")
    token = NEW_DEFINITION.set(True)
    try:
        nodes = [json.loads(v) for v in opts(argv_of(xml, caps_aarch64), "-blockdev")]
    finally:
        NEW_DEFINITION.reset(token)
    assert nodes[0]["filename"] == "/fw/code.qcow2"
    assert nodes[2]["filename"] == "/var/lib/libvirt/qemu/nvram/guest_VARS.qcow2"
    loaded = [json.loads(v) for v in opts(argv_of(xml, caps_aarch64), "-blockdev")]
    assert loaded[0]["filename"] == "/fw/code.raw"
    assert not NEW_DEFINITION.get()
    assert answer({"domain": "/nonexistent.xml", "caps": "x", "abi_update": True})["error"]
    assert not NEW_DEFINITION.get()  # the request's setting does not outlive it


def test_hvf_domains_need_qemus_hvf_accelerator(caps_10, corpus: Path) -> None:
    """qemuBuildAccelCommandLine: type='hvf' is -accel hvf; virQEMUCapsIsVirtTypeSupported refuses it on a QEMU
    without the accelerator."""
    hvf = load_caps(str(corpus / "caps" / "libvirt-11.3.0" / "caps_7.2.0_x86_64+hvf.xml"))
    xml = domain(machine="pc", dtype="hvf")
    assert opts(argv_of(xml, hvf), "-accel") == ["hvf"]
    with pytest.raises(Exception, match="does not support virt type 'hvf'"):
        argv_of(xml, caps_10)


def test_pit_and_hpet_timers_follow_the_capabilities(caps_10, caps_aarch64) -> None:
    """qemuBuildClockCommandLine: a PIT timer without a tick policy is written as delay, only where QEMU has the
    KVM PIT's lost_tick_policy; -no-hpet is a PC's (x86) option only."""
    pit = "<clock offset='utc'><timer name='pit'/><timer name='hpet' present='no'/></clock>"
    assert "kvm-pit.lost_tick_policy=delay" in opts(argv_of(domain(extra=pit, machine="pc"), caps_10), "-global")
    arm = argv_of(domain(extra=pit, arch="aarch64", machine="virt", dtype="qemu"), caps_aarch64)
    assert not [g for g in opts(arm, "-global") if "kvm-pit" in g]
    assert "-no-hpet" not in arm


def test_vdpa_interface_passes_the_opened_device_in_an_fd_set(caps_10) -> None:
    """qemuBuildHostNetProps: <interface type='vdpa'> is a vhost-vdpa netdev on /dev/fdset/N, the device libvirt
    opened passed with -add-fd (opaque ALIAS-vdpa; fd 1732 is the harness's), queues when more than one."""
    nic = ("<interface type='vdpa'><mac address='52:54:00:95:db:c0'/><source dev='/dev/vhost-vdpa-0'/>"
           "<driver queues='2'/></interface>")
    argv = argv_of(domain(nic, machine="pc"), caps_10)
    assert opts(argv, "-add-fd") == ["set=0,fd=1732,opaque=net0-vdpa"]
    assert json.loads(opts(argv, "-netdev")[0]) == {"type": "vhost-vdpa", "vhostdev": "/dev/fdset/0", "queues": 2,
                                                    "id": "hostnet0"}
    nic_dev = json.loads(next(d for d in opts(argv, "-device") if "virtio-net-pci" in d))
    assert nic_dev["mq"] is True and nic_dev["vectors"] == 6


def test_iscsi_hostdev_is_an_iscsi_node_under_scsi_generic(caps_10) -> None:
    """qemuBuildHostdevSCSICommandLine over iSCSI: the LUN is an iscsi -blockdev (as an iSCSI disk's,
    qemuBlockStorageSourceGetISCSIProps; LUN 0 unless the name gives one: virDomainPostParseCheckISCSIPath)."""
    hd = ("<hostdev mode='subsystem' type='scsi'><source protocol='iscsi' name='iqn.2001-01.org.example:t{}'>"
          "<host name='example.org' port='3260'/></source>"
          "<address type='drive' controller='0' bus='0' target='0' unit='4'/></hostdev>")
    for suffix, lun in (("/1", 1), ("", 0)):
        node = json.loads(opts(argv_of(domain(hd.format(suffix), machine="pc"), caps_10), "-blockdev")[0])
        assert node == {"driver": "iscsi", "portal": "example.org:3260", "target": "iqn.2001-01.org.example:t",
                        "lun": lun, "transport": "tcp", "node-name": "libvirt-1-backend", "read-only": False}


def test_serial_without_a_port_takes_one_past_the_highest() -> None:
    """virDomainChrDefPostParse: a serial without <target port> takes one past the highest port of all serials,
    including one given further down."""
    from conformance.argv.chardev import serial_ports
    from conformance.domain.model import Chardev

    first, given, third = Chardev(), Chardev(target_attrs={"port": "0"}), Chardev()
    ports = serial_ports([first, given, third])
    assert [ports[id(c)] for c in (first, given, third)] == [1, 0, 2]



def test_pci_refusals_say_what_libvirt_says(caps_10) -> None:
    """virDomainPCIAddressFlagsCompatible and virDomainPCIAddressSetGrow: an integrated device (virtio-iommu) off
    bus 0, a device on a bus that does not take its kind, and a controller no bus can be added for are refused
    with libvirt's messages (an XML error for an address the domain gave)."""
    acpi = "<features><acpi/></features>"
    iommu = ("<iommu model='virtio'>"
             "<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></iommu>")
    with pytest.raises(DomainInvalid, match=r"XML error: The device at PCI address 0000:01:00\.0 needs to be an "
                                            r"integrated device \(bus=0\)"):
        argv_of(domain(iommu, extra=acpi), caps_10)
    upstream = ("<controller type='pci' index='1' model='pcie-root-port'/>"
                "<controller type='pci' index='2' model='pcie-switch-upstream-port'/>"
                "<interface type='user'><model type='e1000e'/>"
                "<address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></interface>")
    with pytest.raises(DomainInvalid, match=r"XML error: The device at PCI address 0000:02:00\.0 cannot be plugged "
                                            r"into the PCI controller with index='2'\. It requires a controller that "
                                            r"accepts a PCI Express device\."):
        argv_of(domain(upstream), caps_10)
    port = ("<controller type='pci' index='1' model='pcie-root-port'>"
            "<address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></controller>")
    with pytest.raises(DomainInvalid, match="internal error: a PCI slot is needed to connect a PCI controller "
                                            "model='pcie-root-port', but none is available, and it cannot be "
                                            "automatically added"):
        argv_of(domain(port), caps_10)
