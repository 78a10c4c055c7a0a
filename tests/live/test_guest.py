"""The test guest: build and cache, initramfs contents, real TCG boots (the pure parts, the report
parser, cpio, modinfo and the init script, are tests/unit/test_guest_units.py).

Builds need Debian's packages (apt-get download): they skip, saying why, when the download
fails. The two real boots (x86_64 q35 with failover + hotplug, aarch64 virt) take ~10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conformance.live.guest import (
    BUILDER_VERSION,
    MODULE_ROOTS,
    Guest,
    GuestDownloadError,
    build_guest,
    init_script_text,
    kernel_version_of,
    read_cpio,
    read_modinfo,
)
from conformance.live.guest_report import GuestReport, ReportReader
from tests.helpers import ROOT

BOOT_TIMEOUT = 60.0      # TCG on 2 busy cores; a boot takes ~2 s alone
REPORT_TIMEOUT = 30.0


# --------------------------------------------------------------------------------------------
# Real builds (download once, then cached)
# --------------------------------------------------------------------------------------------

def _build_or_skip(arch: str) -> Guest:
    try:
        return build_guest(arch)
    except GuestDownloadError as exc:
        pytest.skip(f"cannot download the {arch} guest's Debian packages: {exc}")


@pytest.fixture(scope="module")
def guest_x86_64() -> Guest:
    return _build_or_skip("x86_64")


@pytest.fixture(scope="module")
def guest_aarch64() -> Guest:
    return _build_or_skip("aarch64")


def _check_guest(guest: Guest, arch: str, console: str, machine: int) -> None:
    started = time.monotonic()
    again = build_guest(arch)
    assert time.monotonic() - started < 0.5, "a cached guest must come back at once"
    assert again == guest
    assert guest.kernel.is_file() and guest.initrd.is_file()
    assert guest.folder.name == f"{arch}-{guest.key}"
    assert guest.console == console and guest.append.startswith(f"console={console} ")
    assert guest.kernel_version and guest.kernel_version in guest.kernel.name
    for needed in ("virtio_pci", "virtio_net", "net_failover", "virtio_blk"):
        assert guest.has_driver(needed), needed
    assert set(guest.missing) <= set(MODULE_ROOTS)

    entries = {e.name: e for e in read_cpio(guest.initrd.read_bytes())}
    init = entries["init"]
    assert init.mode == 0o100755 and f"GUEST_INIT_VERSION={BUILDER_VERSION}-{guest.key}" in init.data.decode()
    assert entries["bin/sh"].data == b"busybox"
    busybox = entries["bin/busybox"].data
    assert busybox[:4] == b"\x7fELF" and struct.unpack_from("<H", busybox, 0x12)[0] == machine
    assert entries["dev/console"].rdev == (5, 1)
    order = entries["lib/modules/load.list"].data.decode().split()
    assert tuple(order) == guest.modules
    loaded: set[str] = set()
    for name in order:
        blob = entries[f"lib/modules/{name}.ko"].data
        deps = [d for v in read_modinfo(blob).get("depends", []) for d in v.split(",") if d]
        assert all(d.replace("-", "_") in loaded or d in guest.builtin for d in deps), (name, deps)
        assert not blob.endswith(b"~Module signature appended~\n")  # Debian's kernel: stripped
        loaded.add(name)


def test_build_x86_64(guest_x86_64: Guest) -> None:
    _check_guest(guest_x86_64, "x86_64", "ttyS0", 62)
    assert kernel_version_of(guest_x86_64.kernel) == guest_x86_64.kernel_version
    # the init script is valid for the guest's own busybox sh
    busybox = next(e.data for e in read_cpio(guest_x86_64.initrd.read_bytes()) if e.name == "bin/busybox")
    if os.uname().machine == "x86_64":
        with _tempdir() as tmp:
            (tmp / "busybox").write_bytes(busybox)
            (tmp / "busybox").chmod(0o755)
            proc = subprocess.run([str(tmp / "busybox"), "sh", "-n", "-c", init_script_text()],
                                  capture_output=True, text=True, timeout=10)
            assert proc.returncode == 0, proc.stderr


def test_build_aarch64(guest_aarch64: Guest) -> None:
    _check_guest(guest_aarch64, "aarch64", "ttyAMA0", 183)
    assert guest_aarch64.kernel.read_bytes()[0x38:0x3C] == b"ARM\x64"  # arm64 Image magic


@contextmanager
def _tempdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qc-guest-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _seeded_cache(tmp_path: Path, guest: Guest) -> Path:
    """A fresh guest cache that reuses the real cache's downloads (no network)."""
    real = guest.folder.parent
    cache = tmp_path / "guest-cache"
    cache.mkdir()
    shutil.copy(real / "sources-amd64.json", cache / "sources-amd64.json")
    (cache / "debs").mkdir()
    (cache / "debs" / "amd64").symlink_to(real / "debs" / "amd64")
    return cache


def test_concurrent_builds_are_atomic(tmp_path: Path, guest_x86_64: Guest) -> None:
    cache = _seeded_cache(tmp_path, guest_x86_64)
    code = ("import json, sys; from pathlib import Path; from conformance.live.guest import build_guest;"
            "g = build_guest('x86_64', cache=Path(sys.argv[1])); print(json.dumps([g.key, str(g.initrd)]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert results[0] == results[1] == [guest_x86_64.key, str(cache / f"x86_64-{guest_x86_64.key}" / "initrd.img")]
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(("x86_64-", ".tmp"))) == \
        [f"x86_64-{guest_x86_64.key}"]
    # same inputs, same bytes
    assert (cache / f"x86_64-{guest_x86_64.key}" / "initrd.img").read_bytes() == guest_x86_64.initrd.read_bytes()


def test_user_kernel_and_modules(tmp_path: Path, guest_x86_64: Guest) -> None:
    """The --kernel/--modules route, fed with Debian's kernel unpacked by hand."""
    real = guest_x86_64.folder.parent
    record = json.loads((real / "sources-amd64.json").read_text())
    unpacked = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(real / "debs" / "amd64" / record["kernel"]["file"]), str(unpacked)],
                   check=True, timeout=120)
    cache = _seeded_cache(tmp_path, guest_x86_64)
    mine = build_guest("x86_64", kernel=guest_x86_64.kernel, modules=unpacked, cache=cache)
    assert mine.key != guest_x86_64.key
    assert mine.kernel_version == guest_x86_64.kernel_version
    assert mine.modules == guest_x86_64.modules and mine.missing == guest_x86_64.missing
    # without the kernel's config (none beside these modules) signatures are kept, and noted
    entries = {e.name: e.data for e in read_cpio(mine.initrd.read_bytes())}
    signed = entries["lib/modules/virtio_net.ko"].endswith(b"~Module signature appended~\n")
    config_known = Path(f"/boot/config-{mine.kernel_version}").is_file()
    assert signed is not config_known
    assert any("signatures kept" in note for note in mine.notes) is signed


# --------------------------------------------------------------------------------------------
# Real boots under TCG
# --------------------------------------------------------------------------------------------

def _qemu_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} not installed")
    return path


@contextmanager
def _running(argv: list[str], folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """QEMU, killed (and reaped) whatever happens."""
    with open(folder / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _wait(reader: ReportReader, log: Path, proc: subprocess.Popen[bytes], folder: Path,
          until: Callable[[GuestReport], bool], what: str, timeout: float) -> GuestReport:
    ok = reader.wait_file(log, until, timeout=timeout, alive=lambda: proc.poll() is None)
    if not ok:
        stderr = (folder / "stderr.log").read_text(errors="replace")[-500:]
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        pytest.fail(f"guest never reported {what} (exit {proc.poll()}): {stderr}\n{tail}")
    return reader.report


def _disk(folder: Path, mib: int) -> Path:
    path = folder / "disk.raw"
    with open(path, "wb") as handle:
        handle.truncate(mib << 20)
    return path


@pytest.mark.smoke
@pytest.mark.live
def test_boot_x86_64_failover_disk_hotplug(tmp_path: Path, guest_x86_64: Guest) -> None:
    """q35: a plain virtio-net NIC, a failover pair (virtio standby + vmxnet3 primary, same MAC),
    a virtio-blk disk, a command shell on ttyS1, and a NIC hot-plugged after boot."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    qemu = _qemu_binary("qemu-system-x86_64")
    log, qmp_sock, shell_sock = tmp_path / "serial.log", tmp_path / "qmp.sock", tmp_path / "shell.sock"
    plain, pair, hotplugged = "52:54:00:12:34:56", "52:54:00:aa:bb:cc", "52:54:00:12:34:99"
    argv = [qemu, "-accel", "tcg", "-machine", "q35", "-m", "256", "-smp", "1", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot",
            *guest_x86_64.boot_args("guest.shell=ttyS1"),
            "-serial", f"file:{log}", "-serial", f"unix:{shell_sock},server=on,wait=off",
            "-qmp", f"unix:{qmp_sock},server=on,wait=off",
            "-device", "pcie-root-port,id=rp1,chassis=1,bus=pcie.0,addr=0x3",
            "-device", "pcie-root-port,id=rp2,chassis=2,bus=pcie.0,addr=0x4",
            "-device", "pcie-root-port,id=rp3,chassis=3,bus=pcie.0,addr=0x6",
            "-netdev", "user,id=hn0", "-device", f"virtio-net-pci,netdev=hn0,id=net0,mac={plain},addr=0x2,romfile=",
            "-netdev", "user,id=hn1",
            "-device", f"virtio-net-pci,netdev=hn1,id=net1,mac={pair},bus=rp1,failover=on,romfile=",
            "-netdev", "user,id=hn2",
            "-device", f"vmxnet3,netdev=hn2,id=hostdev0,mac={pair},bus=rp2,failover_pair_id=net1,romfile=",
            "-drive", f"file={_disk(tmp_path, 64)},format=raw,if=none,id=d0",
            "-device", "virtio-blk-pci,drive=d0,id=disk0,addr=0x5"]
    reader = ReportReader()
    with _running(argv, tmp_path) as proc:
        rep = _wait(reader, log, proc, tmp_path, lambda r: r.boot_complete, "END-OF-BOOT-REPORT", BOOT_TIMEOUT)
        assert rep.boot_ok and rep.panic is None and not rep.module_failures
        boot = rep.boot
        assert boot is not None and boot.system is not None
        assert boot.system.kernel == guest_x86_64.kernel_version
        eth, = boot.nets_with_mac(plain)
        assert (eth.driver, eth.pci, eth.role) == ("virtio_net", "0000:00:02.0", None)
        vda = boot.disk("vda")
        assert vda is not None and vda.sectors == 64 * 2048 and vda.driver == "virtio_blk"
        assert vda.pci == "0000:00:05.0"
        assert {c.name for c in boot.consoles} == {"ttyS0", "ttyS1"}
        assert boot.pci_device("0000:00:05.0").virtio_driver == "virtio_blk"

        # the primary is hot-plugged once virtio-net negotiated failover: in the boot report
        # or a later one
        def roles(r: GuestReport) -> bool:
            snap = r.latest
            return snap is not None and {n.role for n in snap.nets_with_mac(pair)} == \
                {"failover-master", "standby", "primary"}
        rep = _wait(reader, log, proc, tmp_path, roles, "the failover roles", REPORT_TIMEOUT)
        snap = rep.latest
        assert snap is not None
        master, = snap.nets_with_role("failover-master")
        standby, = snap.nets_with_role("standby")
        primary, = snap.nets_with_role("primary")
        assert master.driver == "net_failover" and master.master is None
        assert standby.driver == "virtio_net" and standby.phys_port_name == "sby"
        assert primary.driver == "vmxnet3" and primary.pci is not None and primary.pci.startswith("0000:02:")
        assert standby.master == primary.master == master.name

        # a shell on the second serial port answers
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(REPORT_TIMEOUT)
            sock.connect(str(shell_sock))
            sock.sendall(f"cat /sys/class/net/{eth.name}/address; echo @@\n".encode())
            answer = b""
            deadline = time.monotonic() + REPORT_TIMEOUT
            while b"@@" not in answer and time.monotonic() < deadline:
                answer += sock.recv(4096)
        assert plain.encode() in answer

        # hot-plug a third NIC: the heartbeat loop notices and reports again
        heartbeats = rep.heartbeats
        qmp = QEMUMonitorProtocol(str(qmp_sock))
        qmp.settimeout(10)
        qmp.connect()
        try:
            qmp.cmd("netdev_add", type="user", id="hn3")
            qmp.cmd("device_add", driver="virtio-net-pci", netdev="hn3", id="net3", mac=hotplugged,
                    bus="rp3", romfile="")
        finally:
            qmp.close()
        rep = _wait(reader, log, proc, tmp_path, lambda r: bool(r.latest and r.latest.nets_with_mac(hotplugged)),
                    "the hot-plugged NIC", REPORT_TIMEOUT)
        new, = rep.latest.nets_with_mac(hotplugged)  # type: ignore[union-attr]
        assert new.driver == "virtio_net" and new.pci is not None and new.pci.startswith("0000:03:")
        assert rep.heartbeats > heartbeats and rep.reports and rep.reports[-1].complete
        assert rep.panic is None
    assert proc.poll() is not None


@pytest.mark.live
def test_a_hot_plugged_device_gets_a_driver_not_loaded_at_boot(tmp_path: Path, guest_x86_64: Guest) -> None:
    """/init loads only what the devices present ask for (docs/guest.md): a q35 with no virtio device boots
    without virtio_pci and virtio_blk; a virtio-blk disk hot-plugged then makes the heartbeat loop load both,
    and the re-report shows the disk driven by virtio_blk."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    qemu = _qemu_binary("qemu-system-x86_64")
    log, qmp_sock = tmp_path / "serial.log", tmp_path / "qmp.sock"
    argv = [qemu, "-accel", "tcg", "-machine", "q35", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", *guest_x86_64.boot_args("guest.hb=0.5"), "-serial", f"file:{log}",
            "-qmp", f"unix:{qmp_sock},server=on,wait=off",
            "-device", "pcie-root-port,id=rp1,chassis=1,bus=pcie.0,addr=0x3",
            "-drive", f"file={_disk(tmp_path, 16)},format=raw,if=none,id=d0"]
    reader = ReportReader()
    with _running(argv, tmp_path) as proc:
        rep = _wait(reader, log, proc, tmp_path, lambda r: r.boot_complete, "END-OF-BOOT-REPORT", BOOT_TIMEOUT)
        assert rep.boot is not None and not rep.boot.disks and not rep.module_failures
        qmp = QEMUMonitorProtocol(str(qmp_sock))
        qmp.settimeout(10)
        qmp.connect()
        try:
            qmp.cmd("device_add", driver="virtio-blk-pci", drive="d0", id="vd0", bus="rp1")
        finally:
            qmp.close()
        rep = _wait(reader, log, proc, tmp_path, lambda r: bool(r.latest and r.latest.disk("vda")),
                    "the hot-plugged disk", REPORT_TIMEOUT)
        vda = rep.latest.disk("vda")  # type: ignore[union-attr]
        assert vda is not None and vda.driver == "virtio_blk" and vda.sectors == 16 * 2048
        assert not rep.module_failures and rep.panic is None


@pytest.mark.live
def test_boot_aarch64_virt(tmp_path: Path, guest_aarch64: Guest) -> None:
    qemu = _qemu_binary("qemu-system-aarch64")
    log = tmp_path / "serial.log"
    mac = "52:54:00:65:43:21"
    argv = [qemu, "-accel", "tcg", "-machine", "virt", "-cpu", "cortex-a57", "-m", "256", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", *guest_aarch64.boot_args(),
            "-serial", f"file:{log}",
            "-device", "pcie-root-port,id=rp1,chassis=1",
            "-netdev", "user,id=hn0", "-device", f"virtio-net-pci,netdev=hn0,mac={mac},bus=rp1,romfile=",
            "-drive", f"file={_disk(tmp_path, 16)},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]
    reader = ReportReader()
    with _running(argv, tmp_path) as proc:
        rep = _wait(reader, log, proc, tmp_path, lambda r: r.boot_complete and r.heartbeats >= 1,
                    "END-OF-BOOT-REPORT and a heartbeat", BOOT_TIMEOUT)
    boot = rep.boot
    assert boot is not None and rep.panic is None
    eth, = boot.nets_with_mac(mac)
    assert eth.driver == "virtio_net" and eth.pci == "0000:01:00.0"
    assert boot.pci_device("0000:01:00.0").vendor == "1af4"
    vda = boot.disk("vda")
    assert vda is not None and vda.sectors == 16 * 2048
    assert [c.name for c in boot.consoles] == ["ttyAMA0"]
    assert boot.system is not None and boot.system.kernel == guest_aarch64.kernel_version
