"""A user's own domain (run --domain, conformance/domain/user.py): loaded as a case, retargeted for the
static stages, adapted for the live ones, with every change and every blocker named. No QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from conformance.cases import Catalogue, load_catalogue
from conformance.domain.user import domain_case, domain_cases, domain_details, load_domain
from conformance.errors import DomainInvalid
from conformance.live.adapt import NeedsHardware
from conformance.pipeline import parse_xml
from conformance.plan import work_items
from conformance.static import STATIC_IMAGE_DIR
from tests.helpers import DATA

DOMAINS = DATA / "domains"
EMULATOR = "/opt/qemu-under-test/bin/qemu-system-x86_64"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def adapt_live(name: str, domain_type: str = "qemu", machine: str = "") -> tuple[etree._Element, list[str], list[str]]:
    user = load_domain(DOMAINS / name)
    adapted = user.adapt(emulator=EMULATOR, machine=machine or user.machine, domain_type=domain_type,
                         image_dir="/srv/vm-folder")
    return etree.fromstring(adapted.xml.encode()), list(adapted.changes), list(adapted.blockers)


def test_a_virt_install_domain_is_a_case_named_after_its_file() -> None:
    case = domain_case(load_domain(DOMAINS / "centos7-pc-ide-rtl8139-kvm.xml"), ("boot",))
    assert case.name == "centos7-pc-ide-rtl8139-kvm"
    assert case.targets == (("x86_64", "pc"),)
    assert case.stages == ("parse", "argv", "boot")  # boot builds on argv and parse (conformance/stages.py)
    assert case.domain is not None and case.domain.type == "kvm"
    assert case.bisect  # a failure names the devices that make it fail


def test_the_planner_plans_a_domain_beside_the_catalogue_cases(catalogue: Catalogue) -> None:
    """One planner: a domain's items are a case's items, by name, stage and build."""
    teaming = catalogue.get("teaming-q35")
    mine = domain_cases([DOMAINS / "debian11-q35-kvm.xml", DOMAINS / "debian11-aarch64-no-tpm.xml"],
                        ("parse", "boot", "migrate"), taken=set(catalogue.cases))
    ids = {i.id for i in work_items([teaming, *mine], [("7.2.22-x86_64", "x86_64"), ("10.0.2-x86_64", "x86_64")],
                                    ["boot", "migrate"])}
    assert "debian11-q35-kvm.boot[10.0.2-x86_64]" in ids
    assert "debian11-q35-kvm.migrate[7.2.22-x86_64->10.0.2-x86_64]" in ids
    assert "teaming-q35.boot[7.2.22-x86_64]" in ids
    assert not any(i.startswith("debian11-aarch64") for i in ids)  # an aarch64 domain on x86_64 builds: nothing


def test_two_domains_of_one_name_are_refused(tmp_path: Path, catalogue: Catalogue) -> None:
    other = tmp_path / "debian11-q35-kvm.xml"
    other.write_bytes((DOMAINS / "alpine-qemu.xml").read_bytes())
    with pytest.raises(DomainInvalid, match=r"comes from .*debian11-q35-kvm\.xml already"):
        domain_cases([DOMAINS / "debian11-q35-kvm.xml", other], ("parse",))
    clash = tmp_path / "teaming-q35.xml"
    clash.write_bytes((DOMAINS / "alpine-qemu.xml").read_bytes())
    with pytest.raises(DomainInvalid, match="the case catalogue"):
        domain_cases([clash], ("parse",), taken=set(catalogue.cases))


@pytest.mark.parametrize(("text", "message", "line"), [
    ("<domain type='kvm'>\n  <name>x</name>\n  <os><type>hvm</type>\n</domain>\n", "malformed XML", 4),
    ("<network><name>default</name></network>\n", "root element is <network>", 1),
    ("<domain type='kvm'>\n  <os>\n    <type>hvm</type>\n  </os>\n</domain>\n", "names no architecture", 3),
    ("<domain type='kvm'><os><type arch='aarch64'>hvm</type></os></domain>", "names no machine type", 1),
])
def test_a_file_that_is_no_domain_is_one_line_naming_the_line(tmp_path: Path, text: str, message: str,
                                                              line: int) -> None:
    path = tmp_path / "mine.xml"
    path.write_text(text)
    with pytest.raises(DomainInvalid) as caught:
        load_domain(path)
    assert message in caught.value.message
    assert caught.value.path == str(path) and caught.value.line == line
    assert caught.value.hint and "\n" not in str(caught.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DomainInvalid, match="cannot read the domain"):
        load_domain(tmp_path / "absent.xml")


def test_the_static_stages_see_the_domain_as_written_but_for_emulator_and_machine() -> None:
    user = load_domain(DOMAINS / "win10-sata-e1000e-kvm.xml")
    adapted = user.adapt(emulator=EMULATOR, machine="pc-q35-7.2", live=False)
    root = etree.fromstring(adapted.xml.encode())
    original = etree.fromstring(user.text)
    assert root.findtext("devices/emulator") == EMULATOR
    assert root.find("os/type").get("machine") == "pc-q35-7.2"
    assert adapted.changes == (f"<emulator> /usr/bin/qemu-system-x86_64 -> {EMULATOR} (the build under test)",
                               "machine type q35 -> pc-q35-7.2")
    for path in ("devices/graphics", "devices/interface/source", "features/hyperv", "devices/disk/source"):
        assert etree.tostring(root.find(path)) == etree.tostring(original.find(path)), path
    assert root.get("type") == "kvm" and root.find("cpu").get("mode") == "host-passthrough"


def test_disks_become_blank_images_in_the_vm_folder_keeping_bus_format_and_cache() -> None:
    root, changes, _ = adapt_live("centos7-pc-ide-rtl8139-kvm.xml")
    disk = root.find("devices/disk")
    assert disk.get("type") == "file"
    assert disk.find("source").get("file") == "/srv/vm-folder/hda.img"
    assert disk.find("target").attrib == {"dev": "hda", "bus": "ide"}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "raw", "cache": "none", "io": "native",
                                          "discard": "unmap"}
    assert any(c.startswith("disk hda (ide; type=raw, cache=none") and "/tmp/c2home/images/centos7.raw -> hda.img"
               in c for c in changes)
    win, _, _ = adapt_live("win10-sata-e1000e-kvm.xml")
    assert win.find("devices/disk/source").get("file") == "/srv/vm-folder/sda.qcow2"
    assert win.find("devices/disk/driver").get("cache") == "writeback"


def test_network_and_volume_disks_become_files_too(tmp_path: Path) -> None:
    path = tmp_path / "net.xml"
    path.write_text("""<domain type='kvm'><name>n</name><memory>65536</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'><driver name='qemu' type='raw' cache='directsync'/>
      <source protocol='rbd' name='pool/image'><host name='mon1' port='6789'/></source>
      <auth username='admin'><secret type='ceph' usage='x'/></auth>
      <target dev='vdb' bus='virtio'/></disk>
    <disk type='volume' device='disk'><driver name='qemu' type='vmdk'/>
      <source pool='default' volume='v.vmdk'/><target dev='vdc' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
  </devices></domain>""")
    adapted = load_domain(path).adapt(emulator=EMULATOR, machine="pc", image_dir="/vm")
    root = etree.fromstring(adapted.xml.encode())
    rbd, volume, cdrom = root.findall("devices/disk")
    assert rbd.get("type") == "file" and rbd.find("source").attrib == {"file": "/vm/vdb.img"}
    assert rbd.find("auth") is None and rbd.find("driver").get("cache") == "directsync"
    assert volume.find("driver").get("type") == "raw" and volume.find("source").get("file") == "/vm/vdc.img"
    assert cdrom.find("source") is None  # an empty drive stays empty
    assert "disk vdc: format vmdk -> raw (the blank images here are raw or qcow2)" in adapted.changes
    assert any("network disk rbd:pool/image -> vdb.img" in c for c in adapted.changes)


def test_interfaces_become_user_netdevs_with_their_model_and_mac() -> None:
    root, changes, _ = adapt_live("centos7-pc-ide-rtl8139-kvm.xml")
    nic = root.find("devices/interface")
    assert nic.get("type") == "user" and nic.find("source") is None
    assert nic.find("mac").get("address") == "52:54:00:7c:00:07"
    assert nic.find("model").get("type") == "rtl8139"
    assert "interface 52:54:00:7c:00:07: type bridge -> user netdev (model rtl8139, MAC kept)" in changes


def test_graphics_go_headless_with_what_needs_spice() -> None:
    root, changes, _ = adapt_live("debian11-q35-kvm.xml")
    assert root.find("devices/graphics") is None
    assert root.find("devices/redirdev") is None
    assert [c.get("type") for c in root.findall("devices/channel")] == ["pty"]  # the agent's, no spicevmc
    assert root.find("devices/video/model").get("type") == "virtio"  # the video device stays
    assert "<graphics type='spice'> removed: headless" in changes


def test_kvm_runs_under_tcg_with_the_host_cpu_as_max() -> None:
    root, changes, _ = adapt_live("win10-sata-e1000e-kvm.xml", domain_type="qemu")
    assert root.get("type") == "qemu"
    assert root.find("cpu").attrib == {"mode": "maximum"}
    assert root.find("features/hyperv") is None
    assert [t.get("name") for t in root.findall("clock/timer")] == ["rtc", "pit", "hpet"]
    assert changes[1] == "type kvm -> qemu: KVM does not work here, the guest runs under TCG"
    assert changes[2] == "<cpu mode='host-passthrough'> -> mode='maximum' (-cpu max): there is no host CPU under TCG"


def test_kvm_stays_where_kvm_works_and_a_named_cpu_stays_under_tcg() -> None:
    root, changes, _ = adapt_live("win10-sata-e1000e-kvm.xml", domain_type="kvm")
    assert root.get("type") == "kvm" and root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("features/hyperv") is not None
    assert not any("kvm ->" in c or "cpu" in c for c in changes)
    centos, _, _ = adapt_live("centos7-pc-ide-rtl8139-kvm.xml")
    assert centos.get("type") == "qemu" and centos.findtext("cpu/model") == "Nehalem"


def test_what_cannot_be_substituted_is_named_and_the_live_render_skips() -> None:
    _, _, blockers = adapt_live("ubuntu22-scsi-hostdev-kvm.xml")
    assert blockers == ["<tpm model='tpm-crb'> backend emulator: libvirt runs swtpm (or passes the host's TPM), "
                        "the suite does not",
                        "<hostdev mode='subsystem' type='pci'> 0000:03:00.0: a host device"]
    user = load_domain(DOMAINS / "ubuntu22-scsi-hostdev-kvm.xml")
    variables = {"emulator": EMULATOR, "machine": "q35", "domain_type": "qemu"}
    with pytest.raises(NeedsHardware, match=r"cannot run here: <tpm .*; <hostdev .* 0000:03:00.0"):
        user.render({**variables, "image_dir": "/srv/vm-folder"})
    assert "<hostdev" in user.render({**variables, "image_dir": STATIC_IMAGE_DIR})  # the static stages run it


def test_an_arm_domain_drops_uefi_and_acpi_for_the_direct_kernel_boot() -> None:
    root, changes, blockers = adapt_live("debian11-aarch64-no-tpm.xml")
    assert root.find("os").get("firmware") is None
    assert root.find("features/acpi") is None
    assert "<os> firmware='efi' removed: the test guest boots its kernel directly" in changes
    assert not blockers
    _, _, with_tpm = adapt_live("debian11-aarch64-tpm.xml")
    assert with_tpm and with_tpm[0].startswith("<tpm> backend emulator")


@pytest.mark.parametrize("name", sorted(p.name for p in DOMAINS.glob("*.xml")))
def test_every_adapted_domain_is_still_a_valid_domain(name: str) -> None:
    """What the live stages run passes libvirt's schema (when installed) and the model's parser (DomainInvalid
    otherwise); the argv stage on real capabilities: tests/static/test_user_domains.py."""
    user = load_domain(DOMAINS / name)
    adapted = user.adapt(emulator=EMULATOR, machine=user.machine, image_dir="/srv/vm-folder")
    domain, _ = parse_xml(adapted.xml, name)
    assert domain.type == "qemu"
    assert all(d.source is None or d.source.attrs.get("file", "").startswith("/srv/vm-folder/")
               for d in domain.devices.disks)


def test_a_result_records_the_file_and_the_changes() -> None:
    case = domain_case(load_domain(DOMAINS / "ubuntu22-scsi-hostdev-kvm.xml"), ("boot",))
    live = domain_details(case, emulator=EMULATOR, live=True, accel="tcg")
    assert live["domain"].endswith("ubuntu22-scsi-hostdev-kvm.xml")
    assert live["domain_changes"][0].startswith("<emulator> /usr/bin/qemu-system-x86_64 -> ")
    assert len(live["domain_blockers"]) == 2
    static = domain_details(case, emulator="/usr/bin/qemu-system-x86_64")
    assert static["domain_changes"] == [] and "domain_blockers" not in static


def test_run_with_a_bad_domain_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from conformance.cli import main

    bad = tmp_path / "web01.xml"
    bad.write_text("<domain type='kvm'>\n  <os><type arch='x86_64'>hvm</type></os>\n")
    code = main(["run", "--caps", "7.2:x86_64", "--stages", "parse", "--domain", str(bad), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"qemu-conformance: error: {bad}:3: malformed XML") and err.count("\n") == 1
    results = tmp_path / "o" / "results.jsonl"
    assert not results.exists() or not results.read_text()  # refused before any result


def test_the_report_shows_a_domains_file_changes_and_blockers() -> None:
    from conformance.report.model import _facts
    from conformance.results.records import StageResult

    case = domain_case(load_domain(DOMAINS / "ubuntu22-scsi-hostdev-kvm.xml"), ("boot",))
    result = StageResult(case=case.name, stage="boot", verdict="skip", reason="cannot run here",
                         details=domain_details(case, emulator=EMULATOR, live=True))
    facts = _facts(result, notable=False)
    changed = next(f for f in facts if f.startswith("domain "))
    assert "ubuntu22-scsi-hostdev-kvm.xml, changed: <emulator> /usr/bin/qemu-system-x86_64 -> " in changed
    assert "interface 52:54:00:2b:3b:07: type network -> user netdev (model e1000, MAC kept)" in changed
    assert any(f.startswith("could not be substituted: <tpm model='tpm-crb'>") and "0000:03:00.0" in f for f in facts)


def test_a_rule_refusing_as_the_emulator_would_is_the_parse_stages_error(tmp_path: Path) -> None:
    """A user's domain can meet a rule that refuses without capabilities as QEMU would (UnsupportedByQemu:
    zPCI on x86): the parse stage's error, not a crash of the whole run."""
    import json

    from conformance.runner import run_stages

    path = tmp_path / "zpci-on-x86.xml"
    path.write_text("""<domain type='qemu'><name>z</name><memory>65536</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0001' bus='0x00' slot='0x00' function='0x0'/></source>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x08' function='0x0'><zpci uid='0x19' fid='0x1f'/></address>
    </hostdev>
  </devices></domain>""")
    code = run_stages(["parse", "argv"], [], [], tmp_path / "out", lambda _line: None, fixtures=["7.2:x86_64"],
                      domains=[path])
    found = {r["stage"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert code == 1
    assert found["parse"]["verdict"] == "error" and "zPCI" in found["parse"]["reason"]
    assert found["argv"]["verdict"] == "skip"


def test_host_memory_files_logs_and_backends_are_substituted_or_named(tmp_path: Path) -> None:
    """What libvirt keeps on the host for a domain: memory files (access modes, discard), hugepage and node
    pinning of memory devices, chardev logs; and what it runs beside QEMU or reads from the host (a
    vhost-user GPU, an ACPI table, an fw_cfg file), which cannot be substituted."""
    path = tmp_path / "host.xml"
    path.write_text("""<domain type='kvm'><name>h</name><memory>1048576</memory><maxMemory slots='4'>4194304</maxMemory>
  <memoryBacking><hugepages/><access mode='shared'/><discard/></memoryBacking>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <acpi><table type='slic'>/var/lib/libvirt/acpi/slic.dat</table></acpi></os>
  <sysinfo type='fwcfg'><entry name='opt/com.coreos/config' file='/tmp/provision.ign'/></sysinfo>
  <cpu><numa><cell id='0' cpus='0' memory='1048576' unit='KiB' memAccess='shared'/></numa></cpu>
  <devices>
    <serial type='pty'><log file='/var/log/libvirt/qemu/h-serial0.log' append='on'/></serial>
    <video><driver name='vhostuser'/><model type='virtio'/></video>
    <memory model='dimm' discard='yes'><source><pagesize unit='KiB'>2048</pagesize><nodemask>1-3</nodemask></source>
      <target><size unit='KiB'>524288</size><node>0</node></target></memory>
  </devices></domain>""")
    adapted = load_domain(path).adapt(emulator=EMULATOR, machine="q35", image_dir="/vm")
    root = etree.fromstring(adapted.xml.encode())
    assert root.find("memoryBacking/source").attrib == {"type": "memfd"}
    assert root.find("memoryBacking/hugepages") is None and root.find("memoryBacking/discard") is None
    assert root.find("memoryBacking/access").get("mode") == "shared"
    assert root.find("devices/serial/log") is None
    dimm = root.find("devices/memory")
    assert dimm.get("discard") is None and len(dimm.find("source")) == 0
    assert "<serial type='pty'> <log> removed: libvirt opens the log file on the host" in adapted.changes
    assert [b.split(":")[0] for b in adapted.blockers] == [
        "<acpi><table type='slic'> /var/lib/libvirt/acpi/slic.dat", "<sysinfo><entry name='opt/com.coreos/config' "
        "file='/tmp/provision.ign'>", "<video> <model type='virtio'> <driver name='vhostuser'>"]


def test_a_versioned_machine_type_is_kept_across_builds_an_alias_is_not(tmp_path: Path) -> None:
    """libvirt keeps a domain's machine type when it migrates: a domain naming pc-q35-6.2 migrates from 7.2 to
    10.0 under pc-q35-6.2; one naming q35 under the newest type both have (the stage's choice, '')."""
    from types import SimpleNamespace

    from conformance.caps.store import resolve
    from conformance.machines import MachineChoice
    from conformance.runner import live_machines

    pinned = tmp_path / "pinned.xml"
    pinned.write_text((DOMAINS / "debian11-q35-kvm.xml").read_text().replace('machine="q35"', 'machine="pc-q35-6.2"'))
    cases = domain_cases([DOMAINS / "debian11-q35-kvm.xml", pinned], ("migrate",))
    builds = [SimpleNamespace(caps=resolve("7.2:x86_64")), SimpleNamespace(caps=resolve("10.0:x86_64"))]
    from conformance.plan import plan

    items = plan(cases, builds, ["migrate"], lambda b: (b.caps.label, b.caps.arch),
                 machines=live_machines(MachineChoice.parse("newest")))
    ids = {p.item.id for p in items}
    assert "pinned.migrate[7.2.22-x86_64->10.0.2-x86_64@pc-q35-6.2]" in ids
    assert "debian11-q35-kvm.migrate[7.2.22-x86_64->10.0.2-x86_64]" in ids
    assert len(ids) == 8
