"""The test guest's pure parts (conformance/live/guest.py, guest_report.py): the report parser on recorded
console output, cpio, modinfo and signatures, the init script, and the one-line errors of bad build
requests. The real builds and boots are tests/live/test_guest.py."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import GuestBuildError
from conformance.live.guest import (
    CpioWriter,
    GuestDownloadError,
    build_guest,
    init_script_text,
    read_cpio,
    read_modinfo,
    strip_signature,
)
from conformance.live.guest_report import STARVED_CAP, ReportReader, parse_report

# --------------------------------------------------------------------------------------------
# Recorded console output (x86_64 q35, failover pair + plain NIC + virtio-blk), with kernel
# lines interleaved as they can be on a shared console.
# --------------------------------------------------------------------------------------------

SAMPLE = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP
GUEST-INIT start version=1-684650ff9513d9a2
[    1.213213] virtio_ring: module verification failed: signature and/or required key missing
BOOT-OK uptime=1.45
SYS kernel=6.1.0-56-cloud-amd64 cpus=0 mem=223632
PCI 0000:00:00.0 8086:29c0 class=060000 drv=- vdrv=-
PCI 0000:00:02.0 1af4:1000 class=020000 drv=virtio-pci vdrv=virtio_net
PCI 0000:00:03.0 1b36:000c class=060400 drv=pcieport vdrv=-
PCI 0000:00:05.0 1af4:1001 class=010000 drv=virtio-pci vdrv=virtio_blk
PCI 0000:01:00.0 1af4:1041 class=020000 drv=virtio-pci vdrv=virtio_net
PCI 0000:02:00.0 15ad:07b0 class=020000 drv=vmxnet3 vdrv=-
NET eth0 addr=52:54:00:12:34:56 master=- dev=0000:00:02.0 drv=virtio_net ppn=- role=- state=down
NET eth1 addr=52:54:00:aa:bb:cc master=- dev=0000:01:00.0 drv=net_failover ppn=- role=failover-master \
state=down
[    1.9] NET: Registered PF_PACKET protocol familyNET eth2 addr=52:54:00:aa:bb:cc master=eth1 \
dev=0000:01:00.0 drv=virtio_net ppn=sby role=standby state=unknown
NET eth3 addr=52:54:00:aa:bb:cc master=eth1 dev=0000:02:00.0 drv=vmxnet3 ppn=- role=primary state=down
BLK vda size=131072 dev=0000:00:05.0 drv=virtio_blk hba=virtio-pci ro=0 rm=0
CON ttyS0 drv=serial
PORT vport0p1 name=org.qemu.guest_agent.0
END-OF-BOOT-REPORT\r
HB 1 2.48
HB two 2.9
REPORT 1 uptime=2.48
SYS kernel=6.1.0-56-cloud-amd64 cpus=0 mem=223632
NET eth0 addr=52:54:00:12:34:56 master=- dev=0000:00:02.0 drv=virtio_net ppn=- role=- state=up
NET eth1 addr=52:54:00:aa:bb:cc master=- dev=0000:01:00.0 drv=net_failover ppn=- role=failover-master state=up
NET eth2 addr=52:54:00:aa:bb:cc master=eth1 dev=0000:01:00.0 drv=virtio_net ppn=sby role=standby state=up
NET eth3 addr=52:54:00:aa:bb:[    3.1] vmxnet3 0000:02:00.0 eth3: NIC Link is Up 10000 Mbps
BLK vda size=131072 dev=0000:00:05.0 drv=virtio_blk hba=virtio-pci ro=0 rm=0
CON ttyS0 drv=serial
END-OF-REPORT 1
HB 2 3.49
NET eth9 addr=00:00:00:00:00:09 master=- dev=- drv=- ppn=- role=- state=up
"""


def test_parse_recorded_sample() -> None:
    rep = parse_report(SAMPLE.splitlines())
    assert rep.init_started and rep.init_version == "1-684650ff9513d9a2" and rep.inits == 1
    assert rep.boot_ok and rep.boot_uptime == pytest.approx(1.45)
    assert rep.boot_complete and rep.boot is not None
    boot = rep.boot
    assert [n.name for n in boot.nets] == ["eth0", "eth1", "eth2", "eth3"]  # eth2 despite the glued kernel text
    master, = boot.nets_with_role("failover-master")
    assert (master.name, master.driver, master.mac, master.master) == ("eth1", "net_failover",
                                                                       "52:54:00:aa:bb:cc", None)
    standby = boot.net("eth2")
    assert standby is not None and (standby.role, standby.phys_port_name, standby.master) == \
        ("standby", "sby", "eth1")
    primary = boot.net("eth3")
    assert primary is not None and (primary.role, primary.driver, primary.pci) == \
        ("primary", "vmxnet3", "0000:02:00.0")
    assert len(boot.nets_with_mac("52:54:00:AA:BB:CC")) == 3
    assert boot.pci_device("0000:00:00.0") is not None and boot.pci_device("0000:00:00.0").driver is None
    assert boot.pci_device("0000:00:02.0").virtio_driver == "virtio_net"
    assert boot.pci_device("0000:02:00.0").id == "15ad:07b0"
    vda = boot.disk("vda")
    assert vda is not None and vda.size_bytes == 64 << 20 and vda.hba == "virtio-pci" and vda.readonly is False
    assert [c.name for c in boot.consoles] == ["ttyS0"] and boot.ports[0].port_name == "org.qemu.guest_agent.0"
    assert boot.system is not None and boot.system.mem_kb == 223632
    # one valid heartbeat after the boot report and one after the re-report; "HB two" is noise
    assert rep.heartbeats == 2 and rep.last_heartbeat == 2 and rep.last_uptime == pytest.approx(3.49)
    # the re-report lost its eth3 line to the kernel (split line): the parser drops it
    assert len(rep.reports) == 1 and rep.reports[0].index == 1 and rep.reports[0].complete
    assert [n.name for n in rep.nets] == ["eth0", "eth1", "eth2"]
    assert all(n.state == "up" for n in rep.nets)
    assert rep.latest is rep.reports[0]
    # a NET line outside any report is not a report
    assert all(n.name != "eth9" for n in rep.nets)
    assert rep.panic is None and rep.kernel_errors == []
    assert rep.noise >= 5


def test_parse_panic_modfail_and_reboot() -> None:
    text = [
        "GUEST-INIT start version=1-x",
        "MODFAIL vmxnet3 rc=1",
        "BOOT-OK uptime=1.0",
        "[    2.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[    2.100000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
        "GUEST-INIT start version=1-x",
    ]
    rep = parse_report(text[:-1])
    assert rep.module_failures == {"vmxnet3": 1} and rep.boot_ok
    assert rep.panic == "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
    assert rep.kernel_errors[0].startswith("BUG: kernel NULL pointer")
    # a second GUEST-INIT (a reboot) starts over but remembers the panic
    rep = parse_report(text)
    assert rep.inits == 2 and not rep.boot_ok and not rep.module_failures and rep.panic is not None
    assert not rep.boot_complete and rep.latest is None and rep.nets == []


def test_report_reader_incremental(tmp_path: Path) -> None:
    data = SAMPLE.encode()
    reader = ReportReader()
    end = data.index(b"END-OF-BOOT-REPORT") + len(b"END-OF-BOOT-REPORT\r\n")
    for i in range(0, end - 1, 5):  # byte-wise chunks up to just before the newline
        reader.feed(data[i:min(i + 5, end - 1)])
    assert not reader.boot_complete  # the last line has no newline yet
    assert reader.feed(data[end - 1:end]) == ["END-OF-BOOT-REPORT"]
    assert reader.boot_complete
    reader.feed(data[end:])
    assert reader.report == parse_report(SAMPLE.splitlines())

    log = tmp_path / "serial.log"
    tail = ReportReader()
    assert tail.poll_file(log) == []  # not there yet
    log.write_bytes(data[:end - 3])
    tail.poll_file(log)
    assert not tail.boot_complete
    with open(log, "ab") as handle:
        handle.write(data[end - 3:])
    assert tail.wait_file(log, lambda r: len(r.reports) == 1, timeout=5)
    assert not tail.wait_file(log, lambda r: r.heartbeats > 5, timeout=0.2)


def test_wait_gives_back_time_a_loaded_host_took(tmp_path: Path) -> None:
    """A starved QEMU's wait is stretched by its run-queue wait (up to STARVED_CAP x the timeout); a guest
    that is not starved times out on time, and a report arriving in the stretched time is seen."""
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    clock = {"starved": 0.0}

    def starved() -> float:  # each look finds 0.1 s more of waiting for a CPU
        clock["starved"] += 0.1
        return clock["starved"]

    started = time.monotonic()
    assert not ReportReader().wait_file(log, lambda r: r.heartbeats > 0, timeout=0.1, interval=0.01, starved=starved)
    assert STARVED_CAP * 0.1 - 0.05 <= time.monotonic() - started < STARVED_CAP * 0.1 + 1.0  # ended at the cap
    started = time.monotonic()
    assert not ReportReader().wait_file(log, lambda r: r.heartbeats > 0, timeout=0.1, interval=0.01,
                                        starved=lambda: 0.0)
    assert time.monotonic() - started < 0.1 * STARVED_CAP - 0.1  # not starved: no stretch

    reader, looks = ReportReader(), {"n": 0}

    def starved_then_report() -> float:  # the report arrives while the wait is stretched
        looks["n"] += 1
        if looks["n"] == 2:
            log.write_bytes(b"HB 1 2.5\n")
        return 0.05 * looks["n"]

    assert reader.wait_file(log, lambda r: r.heartbeats > 0, timeout=0.05, interval=0.01, starved=starved_then_report)


def test_run_queue_wait_reads_a_real_process(tmp_path: Path) -> None:
    """GuestVm.run_queue_wait reads the kernel's schedstat of the process's threads: a number for a running
    process (never negative, and it never goes back), 0.0 once it has gone."""
    from conformance.live.vm import GuestVm

    vm = GuestVm(sys.executable, [], tmp_path, tmp_path / "console.log")
    busy_then_idle = "import time; [sum(range(10**5)) for _ in range(50)]; time.sleep(5)"
    proc = subprocess.Popen([sys.executable, "-c", busy_then_idle])
    try:
        vm.process.proc = proc  # type: ignore[assignment]  # the reader needs only the pid
        first = vm.run_queue_wait()
        time.sleep(0.2)
        second = vm.run_queue_wait()
        assert 0.0 <= first <= second
    finally:
        proc.kill()
        proc.wait()
    assert vm.run_queue_wait() == 0.0


# --------------------------------------------------------------------------------------------
# Builder pieces that need no download
# --------------------------------------------------------------------------------------------

def test_cpio_roundtrip() -> None:
    cpio = CpioWriter()
    cpio.add_dir("bin")
    cpio.add_file("bin/x", b"abc", 0o755)
    cpio.add_symlink("bin/sh", "x")
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_file("odd", b"12345")
    archive = cpio.finish()
    assert len(archive) % 4 == 0
    entries = {e.name: e for e in read_cpio(archive)}
    assert list(entries) == ["bin", "bin/x", "bin/sh", "dev/console", "odd"]
    assert entries["bin/x"].data == b"abc" and entries["bin/x"].mode == 0o100755
    assert entries["bin/sh"].data == b"x" and entries["bin/sh"].mode & 0o170000 == 0o120000
    assert entries["dev/console"].rdev == (5, 1) and entries["dev/console"].mode & 0o170000 == 0o020000
    assert entries["odd"].data == b"12345"
    with pytest.raises(ValueError):
        list(read_cpio(archive[:50] + b"x" * 200))


def _tiny_module(depends: str, signed: bool) -> bytes:
    """A minimal ELF64 file with a .modinfo section (what read_modinfo needs)."""
    modinfo = f"license=GPL\0depends={depends}\0alias=pci:v00001AF4d*\0alias=virtio:d00000001v*\0".encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    header_size, sh_size = 64, 64
    data_off = header_size
    strtab_off = data_off + len(modinfo)
    shoff = strtab_off + len(shstrtab)
    elf = bytearray(b"\x7fELF\x02\x01\x01" + b"\0" * 9)
    elf += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, sh_size, 3, 2)
    elf += modinfo + shstrtab
    elf += b"\0" * sh_size
    elf += struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, data_off, len(modinfo), 0, 0, 1, 0)
    elf += struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, strtab_off, len(shstrtab), 0, 0, 1, 0)
    if signed:
        elf += b"S" * 40 + struct.pack(">BBBBBxxxI", 0, 0, 2, 0, 0, 40) + b"~Module signature appended~\n"
    return bytes(elf)


def test_read_modinfo_and_strip_signature() -> None:
    signed = _tiny_module("virtio,virtio_ring", signed=True)
    info = read_modinfo(signed)
    assert info["depends"] == ["virtio,virtio_ring"]
    assert info["alias"] == ["pci:v00001AF4d*", "virtio:d00000001v*"]
    plain = strip_signature(signed)
    assert plain == _tiny_module("virtio,virtio_ring", signed=False)
    assert strip_signature(plain) == plain
    with pytest.raises(ValueError):
        read_modinfo(b"not an elf file at all")


def test_init_script_is_shell_with_protocol() -> None:
    text = init_script_text()
    assert text.startswith("#!/bin/sh\n")
    for token in ("GUEST-INIT start", "BOOT-OK uptime=", "END-OF-BOOT-REPORT", "END-OF-REPORT", "HB ",
                  "@GUEST_INIT_VERSION@"):
        assert token in text
    sh = shutil.which("sh")
    if sh:
        proc = subprocess.run([sh, "-n"], input=text, capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0, proc.stderr


def test_bad_requests_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GuestBuildError, match="unknown guest architecture"):
        build_guest("riscv64", cache=tmp_path)
    with pytest.raises(GuestBuildError, match="without its kernel"):
        build_guest("x86_64", modules=tmp_path, cache=tmp_path)
    with pytest.raises(GuestBuildError, match="kernel image not found"):
        build_guest("x86_64", kernel=tmp_path / "nope", busybox=Path(sys.executable), cache=tmp_path)
    (tmp_path / "vmlinuz").write_bytes(b"\0" * 4096)
    with pytest.raises(GuestBuildError, match="not a kernel modules folder") as err:
        build_guest("x86_64", kernel=tmp_path / "vmlinuz", modules=tmp_path, cache=tmp_path)
    assert "\n" not in str(err.value)
    # python is dynamically linked: refused as busybox, with what to install
    with pytest.raises(GuestBuildError, match="not a statically linked x86_64 busybox") as err:
        build_guest("x86_64", kernel=tmp_path / "vmlinuz", busybox=Path(sys.executable), cache=tmp_path)
    assert "busybox-static" in str(err.value)


def test_no_apt_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import conformance.live.guest as guest_module

    real_which = shutil.which
    monkeypatch.setattr(guest_module.shutil, "which",
                        lambda name, *a, **k: None if name in ("apt-get", "dpkg-deb") else real_which(name))
    with pytest.raises(GuestBuildError) as err:
        build_guest("x86_64", cache=tmp_path)
    assert not isinstance(err.value, GuestDownloadError)
    text = str(err.value)
    assert "apt-get/dpkg-deb not found" in text and "--kernel" in text and "--modules" in text
    assert "busybox" in text and "\n" not in text


def test_flavours_plan_their_own_roots(tmp_path: Path) -> None:
    from conformance.live.guest import DEVICE_MODULE_ROOTS, FLAVOURS, MODULE_ROOTS, _plan_modules

    assert FLAVOURS["cloud"][1] == MODULE_ROOTS
    assert FLAVOURS["generic"][1] == MODULE_ROOTS + DEVICE_MODULE_ROOTS
    assert not set(MODULE_ROOTS) & set(DEVICE_MODULE_ROOTS)
    folder = tmp_path / "lib" / "modules" / "6.1.0-test"
    (folder / "kernel").mkdir(parents=True)
    (folder / "kernel" / "virtio.ko").write_bytes(_tiny_module("", signed=False))
    (folder / "kernel" / "sym53c8xx.ko").write_bytes(_tiny_module("virtio", signed=False))
    cloud = _plan_modules(folder, strip=True)
    assert "sym53c8xx" not in cloud.order and "sym53c8xx" not in cloud.missing
    generic = _plan_modules(folder, strip=True, roots=FLAVOURS["generic"][1])
    assert generic.order.index("virtio") < generic.order.index("sym53c8xx")
    assert "mptsas" in generic.missing


def test_an_unknown_flavour_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(GuestBuildError, match="unknown guest flavour 'tiny'") as err:
        build_guest("x86_64", flavour="tiny", cache=tmp_path)
    assert "cloud, generic" in str(err.value)


def _elf_with_notes(notes: list[tuple[bytes, int, bytes]]) -> bytes:
    """A 64-bit little-endian ELF with one PT_NOTE segment holding ``notes`` (name, type, desc)."""
    blob = b""
    for name, ntype, desc in notes:
        name0 = name + b"\0"
        blob += struct.pack("<III", len(name0), len(desc), ntype)
        blob += name0.ljust((len(name0) + 3) // 4 * 4, b"\0") + desc.ljust((len(desc) + 3) // 4 * 4, b"\0")
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(blob), len(blob), 4)
    return bytes(header) + phdr + blob


def _bzimage(payload_elf: bytes) -> bytes:
    """A bzImage as far as direct_kernel reads one: setup sectors, 'HdrS', payload offset and length, an XZ
    payload that ends in the uncompressed size."""
    import lzma

    payload = lzma.compress(payload_elf, format=lzma.FORMAT_XZ) + struct.pack("<I", len(payload_elf))
    setup = bytearray(5 * 512)
    setup[0x1F1] = 4
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    return bytes(setup) + payload


def test_the_direct_kernel_is_the_bzimages_elf_when_it_has_a_pvh_entry(tmp_path: Path) -> None:
    from conformance.live.guest import Guest, direct_kernel

    def guest(folder: str, elf: bytes, arch: str = "x86_64") -> Guest:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "vmlinuz-6.1").write_bytes(_bzimage(elf))
        (tmp_path / folder / "initrd.img").write_bytes(b"")
        return Guest(arch, tmp_path / folder / "vmlinuz-6.1", tmp_path / folder / "initrd.img", "6.1", "ttyS0",
                     "console=ttyS0", "k")

    pvh = _elf_with_notes([(b"Xen", 6, b"linux"), (b"Xen", 18, b"\x50\x08\x00\x01")])
    with_entry = guest("pvh", pvh)
    made = direct_kernel(with_entry)
    assert made is not None and made.parent == tmp_path / "pvh" and made.name.startswith("vmlinux-6.1-")
    assert made.read_bytes() == pvh
    assert with_entry.boot_args(direct=True)[1] == str(made)
    assert with_entry.boot_args()[1] == str(with_entry.kernel)  # the bzImage unless asked
    no_entry = guest("plain", _elf_with_notes([(b"Xen", 6, b"linux"), (b"GNU", 18, b"x")]))
    assert direct_kernel(no_entry) is None and no_entry.boot_args(direct=True)[1] == str(no_entry.kernel)
    assert direct_kernel(guest("arm", pvh, "aarch64")) is None  # an arm64 Image is QEMU's to unpack
    # another kernel file in the same guest folder, same version: never the first kernel's ELF
    corrupt = tmp_path / "vmlinuz-corrupt"
    corrupt.write_bytes(b"\0" * 4096)
    other = dataclasses.replace(with_entry, kernel=corrupt)
    assert direct_kernel(other) is None and other.boot_args(direct=True)[1] == str(corrupt)


def test_the_direct_kernel_only_under_pc_types_that_enter_pvh(monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU's pc compat turns PVH off for the 3.1 types and older (measured on 7.2: pc-i440fx-3.1 refuses the ELF
    with an initrd, "linux kernel too old to load a ram disk"; pc-i440fx-4.0 and pc-q35-4.0 boot it)."""
    from types import SimpleNamespace

    from conformance.caps.model import QemuVersion
    from conformance.live.boot import direct_boot

    aliases = {"q35": "pc-q35-7.2", "pc": "pc-i440fx-7.2"}
    caps = SimpleNamespace(version=QemuVersion(7, 2, 0),
                           machine=lambda n: SimpleNamespace(name=aliases.get(n, n)))
    monkeypatch.delenv("QEMU_CONFORMANCE_DIRECT_KERNEL", raising=False)
    assert not direct_boot(caps, "pc-q35-7.2")  # type: ignore[arg-type]  # off unless asked for
    monkeypatch.setenv("QEMU_CONFORMANCE_DIRECT_KERNEL", "1")
    assert [direct_boot(caps, m) for m in ("q35", "pc", "pc-i440fx-4.0", "pc-q35-5.2")] == [True] * 4  # type: ignore[arg-type]
    assert not any(direct_boot(caps, m) for m in ("pc-i440fx-3.1", "pc-q35-2.12", "isapc", ""))  # type: ignore[arg-type]
    old = SimpleNamespace(version=QemuVersion(3, 1, 0), machine=caps.machine)
    assert not direct_boot(old, "pc-q35-7.2")  # type: ignore[arg-type]


def _modalias_plan() -> Any:
    from conformance.live.guest import _ModulePlan

    order = ["virtio_ring", "virtio", "virtio_pci", "virtio_mmio", "failover", "net_failover", "virtio_net",
             "scsi_common", "scsi_mod", "sd_mod", "cdrom", "sr_mod", "vmxnet3", "libata", "ata_piix", "usb_common",
             "usbcore", "uhci_hcd", "odd"]
    depends = {"virtio": ["virtio_ring"], "virtio_pci": ["virtio", "virtio_ring"], "virtio_mmio": ["virtio"],
               "net_failover": ["failover"], "virtio_net": ["net_failover", "virtio"], "scsi_mod": ["scsi_common"],
               "sd_mod": ["scsi_mod"], "sr_mod": ["cdrom", "scsi_mod"], "libata": ["scsi_mod"],
               "ata_piix": ["libata"], "usbcore": ["usb_common"], "uhci_hcd": ["usbcore"]}
    aliases = {"virtio_pci": ["pci:v00001AF4d*sv*sd*bc*sc*i*"], "virtio_mmio": ["acpi*:LNRO0005:*"],
               "virtio_net": ["virtio:d00000001v*"], "sd_mod": ["scsi:t-0x00*"], "sr_mod": ["scsi:t-0x05*"],
               "vmxnet3": ["pci:v000015ADd000007B0sv*sd*bc*sc*i*"],
               "ata_piix": ["pci:v00008086d00007010sv*sd*bc*sc*i*", "pci:v00008086d0000[1-2]9C?sv*sd*bc*sc*i*"],
               "uhci_hcd": ["pci:v*d*sv*sd*bc0Csc03i00*"], "odd": ["of:N*T*Cweird|name (x)"]}
    return _ModulePlan(order, {}, [], [], {m: depends.get(m, []) for m in order}, aliases)


@pytest.mark.parametrize(("modaliases", "wanted"), [
    # IDE on the pc machine: ata_piix with what it needs, and the disk drivers its devices will ask for later
    (["pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80"],
     "scsi_common scsi_mod sd_mod cdrom sr_mod libata ata_piix"),
    # a bracket range in a pattern, a class match whatever the vendor, and a device nothing drives
    (["pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00", "pci:v00001033d00000194sv0sd0bc0Csc03i00",
      "cpu:type:x86,ven0000fam0006mod003F:feature:,0000", "pci:v00008086d00002930sv00001AF4sd00001100bc0Csc05i00"],
     "scsi_common scsi_mod sd_mod cdrom sr_mod libata ata_piix usb_common usbcore uhci_hcd"),
    # a virtio transport, then (after it probed) a virtio-net device; a pattern whose bus has a wildcard
    (["pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "virtio:d00000001v00001AF4", "acpi:LNRO0005:"],
     "virtio_ring virtio virtio_pci virtio_mmio failover net_failover virtio_net"),
    # shell metacharacters in a pattern are literal
    (["of:NfooTbarCweird|name (x)", "of:NfooTbarCweird"], "odd"),
    ([], ""),
])
def test_modalias_script_needs_what_the_devices_ask_for(tmp_path: Path, modaliases: list[str], wanted: str) -> None:
    """The script /init sources (lib/modules/modalias.sh) matches modaliases as modprobe does (the modules' own
    patterns) and adds each module with its dependencies and the modules it implies, in load order."""
    from conformance.live.guest import modalias_script

    sh = shutil.which("busybox") or shutil.which("sh")
    if sh is None:
        pytest.skip("no sh to run the generated script with")
    plan = _modalias_plan()
    script = tmp_path / "modalias.sh"
    script.write_text(modalias_script(plan))
    driver = (f'. "{script}"\nNEED=" "\nfor a in "$@"; do modalias_needs "$a"; done\n'
              'for m in $(cat "$0.order"); do case $NEED in *" $m "*) printf "%s " "$m" ;; esac; done\n')
    (tmp_path / "drive.sh").write_text(driver)
    (tmp_path / "drive.sh.order").write_text("\n".join(plan.order))
    argv = [sh, *(["sh"] if sh.endswith("busybox") else []), str(tmp_path / "drive.sh"), *modaliases]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == wanted.split()


def test_modalias_script_loads_virtio_drivers_after_their_transports() -> None:
    """What /init relies on: the transports it looks at the devices again after come before every module the
    virtio devices ask for, in the load order; the failover primaries and the modules nothing names are listed."""
    from conformance.live.guest import IMPLIED_MODULES, modalias_script, modules_wanted

    plan = _modalias_plan()
    text = modalias_script(plan)
    assert 'RESCAN_AFTER="virtio_pci virtio_mmio"' in text and 'FAILOVER_PRIMARIES="vmxnet3"' in text
    assert 'ALWAYS=""' in text  # every module here is named by an alias, a dependency or IMPLIED_MODULES
    wanted = modules_wanted(plan.order, plan.depends)
    assert wanted["virtio_net"] == ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net"]
    assert wanted["scsi_mod"] == ["scsi_common", "scsi_mod", "sd_mod", "cdrom", "sr_mod"]
    assert set(IMPLIED_MODULES["scsi_mod"]) <= set(wanted["ata_piix"])


def test_the_initramfs_is_an_uncompressed_cpio() -> None:
    """The kernel reads a plain newc cpio with no inflate on the emulated CPU (docs/guest.md, issue 21)."""
    from conformance.live.guest import _initramfs

    plan = _modalias_plan()
    plan = dataclasses.replace(plan, order=["virtio_ring"], blobs={"virtio_ring": b"\x7fELF-module"})
    archive = _initramfs("#!/bin/sh\necho @GUEST_INIT_VERSION@\n", "k3y", b"\x7fELF-busybox", plan)
    assert archive.startswith(b"070701"), archive[:8]  # not gzip (1f 8b)
    entries = {e.name: e for e in read_cpio(archive)}
    assert entries["bin/busybox"].data == b"\x7fELF-busybox"
    assert entries["lib/modules/virtio_ring.ko"].data == b"\x7fELF-module"
    assert entries["init"].mode == 0o100755 and entries["init"].data.endswith(b"-k3y\n")
