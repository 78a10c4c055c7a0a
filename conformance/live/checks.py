"""What a booted guest must show, derived from the live argv, and the comparison with its report.

Expectations come from the ``-device`` options QEMU was given (so they hold for
whatever the domain asked for), checked against the guest's own report:

- every PCI device with a known vendor:device id appears on the guest's PCI bus;
- every NIC appears with its MAC and driver when the guest kernel has that driver (else only
  its PCI function is checked, and a note says so);
- disks appear as block devices of the right kind (virtio-blk vdX, SCSI/SATA sdX, CD-ROM srX)
  when the guest can drive their controller;
- serial ports appear as consoles, virtio-serial ports with their names;
- a failover pair (failover=on + failover_pair_id) forms a failover master with the standby
  (ppn=sby) and the primary enslaved.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from conformance.live.guest_report import GuestReport

# QEMU device -> (PCI vendor:device as the guest sees it (virtio: modern/transitional id), guest module)
PCI_DEVICES: dict[str, tuple[str | None, str | None]] = {
    "virtio-net-pci": ("1af4:1000", "virtio_net"),
    "virtio-blk-pci": ("1af4:1001", "virtio_blk"),
    "virtio-balloon-pci": ("1af4:1002", "virtio_balloon"),
    "virtio-serial-pci": ("1af4:1003", "virtio_console"),
    "virtio-scsi-pci": ("1af4:1004", "virtio_scsi"),
    "virtio-rng-pci": ("1af4:1005", "virtio_rng"),
    "virtio-gpu-pci": ("1af4:1050", None),
    "virtio-vga": ("1af4:1050", None),
    "virtio-keyboard-pci": ("1af4:1052", None),
    "virtio-mouse-pci": ("1af4:1052", None),
    "virtio-tablet-pci": ("1af4:1052", None),
    "e1000": ("8086:100e", "e1000"),
    "e1000e": ("8086:10d3", "e1000e"),
    "rtl8139": ("10ec:8139", "8139cp"),
    "vmxnet3": ("15ad:07b0", "vmxnet3"),
    "pcie-root-port": ("1b36:000c", None),
    "qemu-xhci": ("1b36:000d", None),
    "nec-usb-xhci": ("1033:0194", None),
    "ich9-usb-ehci1": ("8086:293a", None),
    "ich9-usb-uhci1": ("8086:2934", None),
    "piix3-usb-uhci": ("8086:7020", None),
    "VGA": ("1234:1111", None),
    "bochs-display": ("1234:1111", None),
    "cirrus-vga": ("1013:00b8", None),
    "qxl-vga": ("1b36:0100", None),
    "i6300esb": ("8086:25ab", None),
    "pci-bridge": ("1b36:0001", None),
    "ich9-ahci": ("8086:2922", "ahci"),
}
# transitional virtio devices show 1af4:10xx (legacy id) or 1af4:1040+N (modern-only)
_VIRTIO_MODERN = {"1000": "1041", "1001": "1042", "1002": "1045", "1003": "1043", "1004": "1048", "1005": "1044"}

NIC_MODULES = {"virtio-net-pci": "virtio_net", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "8139cp",
               "vmxnet3": "vmxnet3", "virtio-net-device": "virtio_net"}


@dataclass
class CheckResult:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _pci_ids(report: GuestReport) -> Counter[str]:
    ids: Counter[str] = Counter()
    for dev in report.pci:
        ids[dev.id] += 1
    return ids


def _id_matches(wanted: str, ids: Counter[str]) -> str | None:
    vendor, device = wanted.split(":")
    for candidate in (wanted, f"{vendor}:{_VIRTIO_MODERN.get(device, device)}"):
        if ids[candidate] > 0:
            return candidate
    return None


def failover_team_enslaved(report: GuestReport, mac: str, *, primary_pci_listed: bool = False) -> bool:
    """The guest enslaved both the standby and the primary of the failover team with this MAC. With
    ``primary_pci_listed``, the report must also list the primary's PCI function (the guest lists PCI
    before NICs: a report taken during the hot-plug can have the NIC only)."""
    team = [n for n in report.nets if (n.mac or "").lower() == mac.lower() and n.master]
    if not {"standby", "primary"} <= {n.role for n in team}:
        return False
    return not primary_pci_listed or {n.pci for n in team if n.role == "primary"} <= {p.addr for p in report.pci}


def failover_pairs(devices: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(standby, primary) device pairs: failover=on and the device naming it in failover_pair_id."""
    standbys = {d.get("id"): d for d in devices if d.get("failover") in (True, "on")}
    return [(standbys[d["failover_pair_id"]], d) for d in devices
            if d.get("failover_pair_id") in standbys]


@dataclass(frozen=True)
class MachineFacts:
    """What the argv says beyond -device: machine type, vCPUs, memory, serial ports given by -serial."""

    machine: str = ""
    cpus: int | None = None
    memory_mib: int | None = None
    serial_options: int = 0

    @classmethod
    def from_argv(cls, argv: list[str]) -> MachineFacts:
        from conformance.argv.options import options

        machine, cpus, mem, serials = "", None, None, 0
        for _, opt, value in options(argv):
            if opt == "-machine" and value:
                machine = value.split(",")[0]
            elif opt == "-smp" and value:
                cpus = int(value.split(",")[0])
            elif opt == "-m" and value:
                mem = _mib(value)
            elif opt == "-serial":
                serials += 1
        return cls(machine, cpus, mem, serials)

    @property
    def sata_module(self) -> str:
        """The guest driver behind ide-hd/ide-cd: AHCI on q35, PIIX IDE on i440fx."""
        return "ahci" if "q35" in self.machine else "ata_piix"


def _mib(value: str) -> int | None:
    """-m 256 / -m size=262144k / -m 512M -> MiB."""
    text = value.split(",")[0].removeprefix("size=").lower()
    scale = {"k": 1 / 1024, "m": 1, "g": 1024}
    try:
        return int(float(text[:-1]) * scale[text[-1]]) if text[-1] in scale else int(text)
    except (ValueError, IndexError):
        return None


def _cpu_count(text: str | None) -> int:
    """'0-3' or '0,2-3' -> 4."""
    count = 0
    for part in (text or "").split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            count += int(high) - int(low) + 1 if high.isdigit() else 1
    return count


def check_report(report: GuestReport, devices: list[dict[str, Any]], has_driver: Any,
                 facts: MachineFacts | None = None) -> CheckResult:
    """Compare the guest's report with the argv; ``has_driver(module)`` tells what the guest kernel drives."""
    result = CheckResult()
    facts = facts or MachineFacts()
    _check_system(report, facts, result)
    ids = _pci_ids(report)
    wanted_pci: Counter[str] = Counter()
    for dev in devices:
        pci_id, _ = PCI_DEVICES.get(str(dev.get("driver")), (None, None))
        if pci_id:
            wanted_pci[pci_id] += 1
    for pci_id, count in sorted(wanted_pci.items()):
        seen = _id_matches(pci_id, ids)
        have = ids[seen] if seen else 0
        if have < count:
            result.failures.append(f"PCI {pci_id}: guest sees {have} of {count}")
        else:
            result.checked.append(f"PCI {pci_id} x{count}")
    pairs = failover_pairs(devices)
    primaries = {str(p.get("id")) for _, p in pairs}
    for dev in devices:
        driver = str(dev.get("driver"))
        module = NIC_MODULES.get(driver)
        mac = dev.get("mac")
        if module is None or not mac:
            continue
        if not has_driver(module):
            result.notes.append(f"NIC {dev.get('id')} ({driver}): the guest kernel has no {module} driver; "
                                f"checked by PCI id only")
            continue
        nets = [n for n in report.nets if n.mac and n.mac.lower() == str(mac).lower()]
        drivers = {n.driver for n in nets}
        if not nets:
            result.failures.append(f"NIC {dev.get('id')} ({driver}, {mac}): not in the guest")
        elif dev.get("id") not in primaries and not pairs and module not in drivers:
            result.failures.append(f"NIC {dev.get('id')} ({mac}): driver {sorted(map(str, drivers))}, "
                                   f"expected {module}")
        else:
            result.checked.append(f"NIC {dev.get('id')} {mac} ({module})")
    for standby, primary in pairs:
        _check_failover(report, standby, primary, has_driver, result)
    _check_disks(report, devices, has_driver, facts, result)
    _check_consoles(report, devices, facts, result)
    return result


def _check_system(report: GuestReport, facts: MachineFacts, result: CheckResult) -> None:
    system = report.system
    if system is None:
        result.failures.append("the guest reported no SYS line")
        return
    if facts.cpus is not None:
        online = _cpu_count(system.cpus)
        if online != facts.cpus:
            result.failures.append(f"vCPUs: guest has {online} online, -smp gave {facts.cpus}")
        else:
            result.checked.append(f"vCPUs x{online}")
    if facts.memory_mib and system.mem_kb:
        seen = system.mem_kb / 1024
        # MemTotal is RAM minus what firmware and kernel keep: within 60-100% of -m
        if not 0.6 * facts.memory_mib <= seen <= facts.memory_mib:
            result.failures.append(f"memory: guest MemTotal {seen:.0f} MiB for -m {facts.memory_mib} MiB")
        else:
            result.checked.append(f"memory {seen:.0f}/{facts.memory_mib} MiB")


def _check_failover(report: GuestReport, standby: dict[str, Any], primary: dict[str, Any], has_driver: Any,
                    result: CheckResult) -> None:
    mac = str(standby.get("mac", "")).lower()
    nets = [n for n in report.nets if (n.mac or "").lower() == mac]
    roles = {n.role: n for n in nets}
    label = f"failover {standby.get('id')} + {primary.get('id')}"
    master = roles.get("failover-master")
    if master is None:
        result.failures.append(f"{label}: no failover master with MAC {mac} in the guest")
        return
    sby = roles.get("standby")
    if sby is None or sby.master != master.name:
        result.failures.append(f"{label}: the standby is not enslaved to {master.name}")
    primary_module = NIC_MODULES.get(str(primary.get("driver")), "")
    prim = roles.get("primary")
    if not has_driver(primary_module):
        result.notes.append(f"{label}: the guest has no {primary_module} driver for the primary")
    elif prim is None or prim.master != master.name:
        result.failures.append(f"{label}: the primary ({primary.get('driver')}) is not enslaved to {master.name}")
    if not [f for f in result.failures if f.startswith(label)]:
        result.checked.append(f"{label}: master {master.name}, standby {sby.name if sby else '-'}, "
                              f"primary {prim.name if prim else '-'}")


def _check_disks(report: GuestReport, devices: list[dict[str, Any]], has_driver: Any, facts: MachineFacts,
                 result: CheckResult) -> None:
    kinds: Counter[str] = Counter()
    for dev in devices:
        driver = str(dev.get("driver"))
        if driver in ("virtio-blk-pci", "virtio-blk-device"):
            kinds["virtio"] += 1
        elif driver == "scsi-hd":
            kinds["scsi"] += 1
        elif driver in ("ide-hd",):
            kinds["ata"] += 1
        elif driver in ("ide-cd", "scsi-cd"):
            kinds["cdrom"] += 1
    names = [d.name for d in report.disks]
    seen = Counter(_disk_kind(d.name, d.hba) for d in report.disks)
    cdrom_bus = {str(d.get("driver")): facts.sata_module for d in devices}.get("ide-cd", "virtio_scsi")
    need = {"virtio": ["virtio_blk"], "scsi": ["virtio_scsi", "sd_mod"], "ata": [facts.sata_module, "sd_mod"],
            "cdrom": [cdrom_bus, "sr_mod"]}
    for kind, count in kinds.items():
        module = ", ".join(need[kind])
        drivable = all(has_driver(m) for m in need[kind])
        if not drivable:
            result.notes.append(f"{count} {kind} disk(s): the guest kernel cannot drive their controller "
                                f"({module}); checked over QMP only")
            continue
        if seen[kind] < count:
            result.failures.append(f"{kind} disks: guest sees {seen[kind]} of {count} ({', '.join(names) or 'none'})")
        else:
            result.checked.append(f"{kind} disks x{count}")


def _disk_kind(name: str, hba: str | None) -> str:
    if name.startswith("vd"):
        return "virtio"
    if name.startswith("sr"):
        return "cdrom"
    return "scsi" if hba == "virtio_scsi" else "ata"


def _check_consoles(report: GuestReport, devices: list[dict[str, Any]], facts: MachineFacts,
                    result: CheckResult) -> None:
    ports = [d for d in devices if d.get("driver") == "virtserialport" and d.get("name")]
    names = {p.port_name for p in (report.latest.ports if report.latest else [])}
    for port in ports:
        if port["name"] not in names:
            result.failures.append(f"virtio-serial port {port['name']}: not in the guest")
        else:
            result.checked.append(f"virtio-serial port {port['name']}")
    ttys = {c.name for c in report.consoles}
    wanted = [f"ttyS{d.get('index', 0)}" for d in devices if d.get("driver") == "isa-serial"]
    if facts.serial_options and not wanted:  # -serial: COM1 on PCs, the PL011 on Arm virt
        wanted = ["ttyS0" if facts.machine.startswith("pc") else "ttyAMA0"]
    for tty in wanted:
        if tty not in ttys:
            result.failures.append(f"serial {tty}: not in the guest ({', '.join(sorted(ttys)) or 'no consoles'})")
        else:
            result.checked.append(f"serial {tty}")
