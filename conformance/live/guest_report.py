"""Parse what the test guest's /init prints on the serial console (protocol: guest_init.sh).

``parse_report(lines)`` turns a whole console log into a :class:`GuestReport`;
:class:`ReportReader` does the same incrementally from chunks of serial output (e.g. a tailed
``-serial file:`` log) and says when the boot report is complete.

Kernel messages share the console: a line that is not a protocol line is counted as noise
and scanned for a kernel panic or oops. A protocol line with kernel text glued in front of it
is still recognised (the last well-formed protocol line in it wins); a protocol line that the
kernel split in two is dropped. An unknown value ("-") reads as None.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Console", "Disk", "GuestReport", "NetIf", "PciDevice", "Port", "ReportReader", "Snapshot",
           "SoundNode", "SystemInfo", "parse_report"]

STARVED_CAP = 5.0  # a wait stretched for a starved QEMU ends at this many times its timeout, whatever the load


@dataclass(frozen=True)
class PciDevice:
    addr: str                      # 0000:00:02.0
    vendor: str                    # 1af4
    device: str                    # 1000
    cls: str                       # 020000
    driver: str | None             # virtio-pci, vmxnet3, pcieport
    virtio_driver: str | None      # virtio_net, virtio_blk ... for virtio devices

    @property
    def id(self) -> str:
        return f"{self.vendor}:{self.device}"


@dataclass(frozen=True)
class NetIf:
    name: str
    mac: str | None
    master: str | None             # the interface this one is enslaved to
    pci: str | None                # PCI address of the device (or its PCI ancestor)
    driver: str | None             # virtio_net, vmxnet3, net_failover (failover master)
    phys_port_name: str | None     # "sby" on a failover standby
    role: str | None               # failover-master | standby | primary
    state: str | None              # operstate: up, down, unknown, lowerlayerdown ...


@dataclass(frozen=True)
class Disk:
    name: str                      # vda, sda, sr0
    sectors: int | None            # 512-byte sectors
    pci: str | None
    driver: str | None             # virtio_blk, sd, sr
    hba: str | None                # driver of the parent: virtio-pci, virtio_scsi, ahci, ata_piix
    readonly: bool | None
    removable: bool | None
    read: str | None = None        # its first block read at boot: ok, err, hung (not done in time); None: not read

    @property
    def size_bytes(self) -> int | None:
        return None if self.sectors is None else self.sectors * 512


@dataclass(frozen=True)
class Console:
    name: str                      # ttyS0, ttyAMA0, hvc0
    driver: str | None


@dataclass(frozen=True)
class SoundNode:
    name: str                      # controlC0, pcmC0D0p
    pci: str | None                # the sound card's PCI address
    driver: str | None             # snd_intel8x0, snd_ens1370, snd_hda_intel
    opened: bool | None            # the guest opened (and closed) it


@dataclass(frozen=True)
class Port:
    name: str                      # vport0p1
    port_name: str | None          # the virtserialport's name=


@dataclass(frozen=True)
class SystemInfo:
    kernel: str | None
    cpus: str | None               # online CPU list as the kernel prints it: "0", "0-1"
    mem_kb: int | None             # MemTotal


@dataclass
class Snapshot:
    """One report: the boot report (index 0) or a re-report after a change (index >= 1)."""

    index: int
    uptime: float | None = None
    system: SystemInfo | None = None
    pci: list[PciDevice] = field(default_factory=list)
    nets: list[NetIf] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)
    consoles: list[Console] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    sounds: list[SoundNode] = field(default_factory=list)
    complete: bool = False

    def net(self, name: str) -> NetIf | None:
        return next((n for n in self.nets if n.name == name), None)

    def nets_with_mac(self, mac: str) -> list[NetIf]:
        mac = mac.lower()
        return [n for n in self.nets if n.mac is not None and n.mac.lower() == mac]

    def nets_with_role(self, role: str) -> list[NetIf]:
        return [n for n in self.nets if n.role == role]

    def disk(self, name: str) -> Disk | None:
        return next((d for d in self.disks if d.name == name), None)

    def pci_device(self, addr: str) -> PciDevice | None:
        return next((p for p in self.pci if p.addr == addr), None)


@dataclass
class GuestReport:
    """Everything learnt from one console log."""

    init_started: bool = False
    init_version: str | None = None
    inits: int = 0                              # GUEST-INIT lines: > 1 means the guest rebooted
    boot_ok: bool = False
    boot_uptime: float | None = None            # guest uptime at BOOT-OK
    boot: Snapshot | None = None                # the boot report (complete at END-OF-BOOT-REPORT)
    reports: list[Snapshot] = field(default_factory=list)  # complete re-reports, in order
    heartbeats: int = 0
    last_heartbeat: int | None = None
    last_uptime: float | None = None            # from the latest BOOT-OK, HB or REPORT
    module_failures: dict[str, int] = field(default_factory=dict)
    panic: str | None = None                    # "Kernel panic - not syncing: ..."
    kernel_errors: list[str] = field(default_factory=list)  # BUG:/Oops lines, the panic line
    noise: int = 0                              # lines that are not protocol lines

    @property
    def boot_complete(self) -> bool:
        return self.boot is not None and self.boot.complete

    @property
    def latest(self) -> Snapshot | None:
        """The newest complete report (a re-report, else the boot report)."""
        if self.reports:
            return self.reports[-1]
        return self.boot if self.boot_complete else None

    @property
    def nets(self) -> list[NetIf]:
        """Interfaces in the newest complete report."""
        return self.latest.nets if self.latest else []

    @property
    def pci(self) -> list[PciDevice]:
        return self.latest.pci if self.latest else []

    @property
    def disks(self) -> list[Disk]:
        return self.latest.disks if self.latest else []

    @property
    def consoles(self) -> list[Console]:
        return self.latest.consoles if self.latest else []

    @property
    def ports(self) -> list[Port]:
        return self.latest.ports if self.latest else []

    @property
    def sounds(self) -> list[SoundNode]:
        return self.latest.sounds if self.latest else []

    @property
    def system(self) -> SystemInfo | None:
        return self.latest.system if self.latest else None


# --------------------------------------------------------------------------------------------
# Line parsing
# --------------------------------------------------------------------------------------------

_TAG = re.compile(r"(GUEST-INIT|BOOT-OK|SYS|PCI|NET|BLK|CON|PORT|SND|END-OF-BOOT-REPORT|HB|REPORT|"
                  r"END-OF-REPORT|MODFAIL)(?= |$)")
_KV = re.compile(r"^[A-Za-z_]+=\S*$")
_INT = re.compile(r"^\d+$")
_FLOAT = re.compile(r"^\d+(?:\.\d+)?$")
_PCI_ADDR = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_PANIC = re.compile(r"Kernel panic - not syncing.*")
_KERNEL_ERROR = re.compile(r"(?:BUG: .*|Oops: .*|general protection fault.*|Kernel panic - not syncing.*)")


def _any(_words: list[str]) -> bool:
    return True


#: tag -> (min, max positional words after the tag, required keys, check of the positional words)
_SHAPES: dict[str, tuple[int, int, tuple[str, ...], Callable[[list[str]], bool]]] = {
    "GUEST-INIT": (1, 1, (), _any),
    "BOOT-OK": (0, 0, ("uptime",), _any),
    "SYS": (0, 0, ("kernel",), _any),
    "PCI": (2, 2, ("class", "drv"), lambda w: bool(_PCI_ADDR.match(w[0])) and ":" in w[1]),
    "NET": (1, 1, ("addr", "master", "dev", "drv"), _any),
    "BLK": (1, 1, ("size", "dev", "drv"), _any),
    "CON": (1, 1, (), _any),
    "PORT": (1, 1, (), _any),
    "SND": (1, 1, ("dev", "drv", "open"), _any),
    "END-OF-BOOT-REPORT": (0, 0, (), _any),
    "HB": (2, 2, (), lambda w: bool(_INT.match(w[0]) and _FLOAT.match(w[1]))),
    "REPORT": (1, 1, (), lambda w: bool(_INT.match(w[0]))),
    "END-OF-REPORT": (0, 1, (), lambda w: all(_INT.match(x) for x in w)),
    "MODFAIL": (1, 1, (), _any),
}


def _split(tag: str, rest: str) -> tuple[list[str], dict[str, str]] | None:
    """Positional words and key=value fields of a protocol line, None when malformed."""
    if rest and not rest.startswith(" "):
        return None
    words = rest.split()
    least, most, required, check = _SHAPES[tag]
    count = 0
    while count < min(most, len(words)) and "=" not in words[count]:
        count += 1
    positional = words[:count]
    if count < least or not check(positional):
        return None
    fields: dict[str, str] = {}
    for word in words[count:]:
        if not _KV.match(word):
            return None
        key, _, value = word.partition("=")
        fields[key] = value
    if any(key not in fields for key in required):
        return None
    return positional, fields


def _split_line(line: str) -> tuple[str, list[str], dict[str, str]] | None:
    """(tag, positional words, fields) of the last well-formed protocol line in ``line``."""
    for match in reversed(list(_TAG.finditer(line))):
        tag = match.group(1)
        parsed = _split(tag, line[match.end():])
        if parsed is not None:
            return tag, parsed[0], parsed[1]
    return None


def _opt(value: str | None) -> str | None:
    return None if value in (None, "", "-") else value


def _opt_int(value: str | None) -> int | None:
    value = _opt(value)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _opt_float(value: str | None) -> float | None:
    value = _opt(value)
    return float(value) if value is not None and _FLOAT.match(value) else None


def _opt_bool(value: str | None) -> bool | None:
    return {"0": False, "1": True}.get(value or "")


class _Parser:
    def __init__(self, report: GuestReport | None = None) -> None:
        self.report = report if report is not None else GuestReport()
        self._open: Snapshot | None = None   # the report being received

    def line(self, raw: str) -> str | None:
        """Take one console line; return its protocol tag, or None for a kernel/noise line."""
        line = raw.replace("\r", "").rstrip("\n")
        parsed = _split_line(line)
        if parsed is None:
            self._kernel_line(line)
            return None
        tag, pos, fields = parsed
        rep = self.report
        if tag == "GUEST-INIT":
            if rep.inits:
                self.report = rep = GuestReport(inits=rep.inits, noise=rep.noise,
                                                kernel_errors=rep.kernel_errors, panic=rep.panic)
            rep.inits += 1
            rep.init_started = True
            rep.init_version = _opt(fields.get("version"))
            rep.boot = self._open = Snapshot(index=0)
        elif tag == "BOOT-OK":
            rep.boot_ok = True
            rep.boot_uptime = rep.last_uptime = _opt_float(fields.get("uptime"))
            if rep.boot is None:  # missed GUEST-INIT: still collect the boot report
                rep.boot = self._open = Snapshot(index=0)
            rep.boot.uptime = rep.boot_uptime
        elif tag == "END-OF-BOOT-REPORT":
            if rep.boot is not None:
                rep.boot.complete = True
            self._open = None
        elif tag == "REPORT":
            uptime = _opt_float(fields.get("uptime"))
            rep.last_uptime = uptime if uptime is not None else rep.last_uptime
            self._open = Snapshot(index=int(pos[0]), uptime=uptime)
        elif tag == "END-OF-REPORT":
            if self._open is not None and self._open is not rep.boot:
                self._open.complete = True
                rep.reports.append(self._open)
            self._open = None
        elif tag == "HB":
            rep.heartbeats += 1
            rep.last_heartbeat = _opt_int(pos[0])
            uptime = _opt_float(pos[1])
            rep.last_uptime = uptime if uptime is not None else rep.last_uptime
        elif tag == "MODFAIL":
            rep.module_failures[pos[0]] = _opt_int(fields.get("rc")) or -1
        elif not self._item(tag, pos, fields):
            rep.noise += 1
            return None
        return tag

    def _item(self, tag: str, pos: list[str], f: dict[str, str]) -> bool:
        snap = self._open
        if snap is None:
            return False
        if tag == "SYS":
            snap.system = SystemInfo(_opt(f.get("kernel")), _opt(f.get("cpus")), _opt_int(f.get("mem")))
        elif tag == "PCI":
            vendor, _, device = pos[1].partition(":")
            if not _PCI_ADDR.match(pos[0]):
                return False
            snap.pci.append(PciDevice(pos[0], vendor, device, f.get("class", ""), _opt(f.get("drv")),
                                      _opt(f.get("vdrv"))))
        elif tag == "NET":
            snap.nets.append(NetIf(pos[0], _opt(f.get("addr")), _opt(f.get("master")), _opt(f.get("dev")),
                                   _opt(f.get("drv")), _opt(f.get("ppn")), _opt(f.get("role")),
                                   _opt(f.get("state"))))
        elif tag == "BLK":
            snap.disks.append(Disk(pos[0], _opt_int(f.get("size")), _opt(f.get("dev")), _opt(f.get("drv")),
                                   _opt(f.get("hba")), _opt_bool(f.get("ro")), _opt_bool(f.get("rm")),
                                   _opt(f.get("rd"))))
        elif tag == "CON":
            snap.consoles.append(Console(pos[0], _opt(f.get("drv"))))
        elif tag == "PORT":
            snap.ports.append(Port(pos[0], _opt(f.get("name"))))
        elif tag == "SND":
            snap.sounds.append(SoundNode(pos[0], _opt(f.get("dev")), _opt(f.get("drv")),
                                         {"ok": True, "err": False}.get(f.get("open", ""))))
        return True

    def _kernel_line(self, line: str) -> None:
        rep = self.report
        if not line.strip():
            return
        rep.noise += 1
        match = _KERNEL_ERROR.search(line)
        if match:
            rep.kernel_errors.append(match.group(0).strip())
            panic = _PANIC.search(line)
            if panic and rep.panic is None:
                rep.panic = panic.group(0).strip()


def parse_report(lines: Iterable[str]) -> GuestReport:
    """A GuestReport from console lines (a file object, ``text.splitlines()``, ...)."""
    parser = _Parser()
    for line in lines:
        parser.line(line)
    return parser.report


class ReportReader:
    """Incremental parser: ``feed()`` chunks of serial output, ``poll_file()`` tails a log file.

    ``report`` is always up to date with the complete lines seen; a partial last line waits
    for its newline.
    """

    def __init__(self) -> None:
        self._parser = _Parser()
        self._pending = b""
        self._offset = 0

    @property
    def report(self) -> GuestReport:
        return self._parser.report

    @property
    def boot_complete(self) -> bool:
        """END-OF-BOOT-REPORT arrived."""
        return self.report.boot_complete

    def feed(self, chunk: bytes | str) -> list[str]:
        """Take a chunk of console output; return the protocol tags of the complete lines in it."""
        data = chunk.encode() if isinstance(chunk, str) else chunk
        data = self._pending + data
        *lines, self._pending = data.split(b"\n")
        tags = []
        for line in lines:
            tag = self._parser.line(line.decode("utf-8", "replace"))
            if tag is not None:
                tags.append(tag)
        return tags

    def poll_file(self, path: Path) -> list[str]:
        """Feed what was appended to ``path`` since the last call (a missing file is empty)."""
        try:
            with open(path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        return self.feed(data)

    def wait_file(self, path: Path, until: Callable[[GuestReport], bool], *, timeout: float,
                  interval: float = 0.05, alive: Callable[[], bool] | None = None,
                  starved: Callable[[], float] | None = None) -> bool:
        """Tail ``path`` until ``until(report)`` holds (True), ``timeout`` s pass, the guest
        panics or ``alive()`` turns False (False in those cases).

        ``starved()``, when given, tells how many seconds the guest has so far waited for a CPU that other
        processes held (QEMU runnable, not running): the deadline moves by that much, so a loaded host does
        not turn a slow boot into a timeout, up to STARVED_CAP times ``timeout`` in all. A guest that hangs
        (busy or halted) on a quiet host still times out after ``timeout`` s."""
        started = time.monotonic()
        deadline, granted = started + timeout, 0.0
        while True:
            self.poll_file(path)
            if until(self.report):
                return True
            if self.report.panic is not None:
                return False
            now = time.monotonic()
            if now >= deadline:
                more = starved() - granted if starved is not None else 0.0
                cap = started + STARVED_CAP * timeout
                if more < interval or now >= cap:
                    return False
                granted += more
                deadline = min(deadline + more, cap)
            if alive is not None and not alive():
                self.poll_file(path)
                return until(self.report)
            time.sleep(interval)
