"""Named capability flags and the one table of rules that derives them.

A flag is a name for one fact about a QEMU binary. Names follow libvirt's
capability strings where libvirt has one, so a user can compare with
libvirt's caps XML; the exceptions are listed in LIBVIRT_ALIASES.

Each rule is data: which raw fact (a QOM type, a property of a type, a QMP
command, a QMP schema query, a machine attribute, a migration capability)
implies the flag, optionally from a minimum QEMU version (libvirt gates a few
flags by version because earlier releases were buggy). The same table runs
backwards on import (conformance/caps/libvirt_import.py): a libvirt flag is
turned into the raw fact that implies it, so probed and imported fixtures
answer ``caps.has(flag)`` through the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance.caps.model import Capabilities, QemuVersion


@dataclass(frozen=True)
class Rule:
    flag: str
    kind: str  # "type" | "property" | "command" | "event" | "schema" | "machine-attr" | "migration" | "accel"
    what: str  # QOM type, command, schema query, machine attribute, capability or accelerator name
    prop: str | None = None  # for kind "property"
    min_version: str | None = None
    doc: str = ""

    def holds(self, caps: Capabilities) -> bool:
        if self.min_version and caps.version < _parse(self.min_version):
            return False
        match self.kind:
            case "type":
                return self.what in caps.qom_types
            case "property":
                return self.prop in caps.type_properties.get(self.what, {})
            case "command":
                return self.what in caps.commands
            case "event":
                return self.what in caps.events
            case "schema":
                return self.what in caps.schema
            case "machine-attr":
                return any(getattr(m, self.what) is not None for m in caps.machines)
            case "migration":
                return self.what in caps.migration_capabilities
            case "accel":
                return self.what in caps.accelerators
        raise ValueError(f"unknown rule kind {self.kind!r}")


def _parse(text: str) -> QemuVersion:
    from conformance.caps.model import QemuVersion

    return QemuVersion.parse(text)


def _types(*pairs: str) -> list[Rule]:
    """'flag=qom-type' or 'name' (flag and type spelled alike) -> type rules."""
    rules = []
    for pair in pairs:
        flag, _, qom_type = pair.partition("=")
        rules.append(Rule(flag, "type", qom_type or flag))
    return rules


RULES: tuple[Rule, ...] = (
    # --- the features this suite exists for -------------------------------------------
    Rule("virtio-net.failover", "property", "virtio-net-pci", "failover",
         doc="virtio-net-pci has the 'failover' property (QEMU 4.2+): libvirt <teaming>"),
    Rule("migration.wait-unplug", "schema", "query-migrate/ret-type/status/^wait-unplug",
         doc="migration waits for the guest to unplug a failover primary"),
    Rule("event.failover-negotiated", "event", "FAILOVER_NEGOTIATED"),
    Rule("event.unplug-primary", "event", "UNPLUG_PRIMARY"),
    # --- argv syntax switches (../shared/peer/libvirt-corpus/index.json format_switches) ---
    Rule("device.json", "schema", "device_add/$json-cli-hotplug",
         doc="JSON -device with working hot-unplug (libvirt: device.json+hotplug), QEMU 7.0+"),
    Rule("netdev.json", "schema", "netdev_add/arg-type/type/^dgram", doc="JSON -netdev, QEMU 7.2+"),
    Rule("object.qapified", "schema", "object-add/arg-type/qom-type/^secret",
         doc="JSON -object, QEMU 6.0+"),
    Rule("blockdev", "command", "blockdev-add", min_version="4.2.0",
         doc="-blockdev instead of -drive (libvirt uses it from QEMU 4.2)"),
    Rule("machine.acpi", "machine-attr", "acpi", doc="-machine acpi=on|off instead of -no-acpi, QEMU 8.0+"),
    Rule("cpu-unavailable-features", "property", "max-x86_64-cpu", "unavailable-features",
         doc="x86 CPUs report unavailable features (QEMU 4.1+); without it libvirt's host-model has no MSR features"),
    Rule("blockjob.backing-mask-protocol", "schema", "block-stream/arg-type/backing-mask-protocol",
         doc="block jobs can mask the protocol layer (QEMU 9.0+): libvirt then drops the format node of raw disks"),
    Rule("machine-hpet", "property", "generic-pc-machine", "hpet", doc="-machine hpet=off, QEMU 8.0+"),
    Rule("machine-i8042-opt", "property", "generic-pc-machine", "i8042"),
    Rule("machine-vmport-opt", "property", "generic-pc-machine", "vmport"),
    Rule("netdev.stream", "schema", "netdev_add/arg-type/type/^stream"),
    Rule("netdev.user", "schema", "netdev_add/arg-type/type/^user"),
    Rule("memory-backend-file", "type", "memory-backend-file"),
    Rule("query-display-options", "command", "query-display-options"),
    Rule("incoming-defer", "command", "migrate-incoming"),
    Rule("migration-events", "event", "MIGRATION"),
    Rule("device.deleted-event", "event", "DEVICE_DELETED"),
    Rule("kvm", "accel", "kvm"),
    Rule("tcg", "accel", "tcg"),
    Rule("vnc", "command", "query-vnc"),
    Rule("spice", "command", "query-spice"),
    Rule("virtio-blk-pci.scsi", "property", "virtio-blk-pci", "scsi"),
    Rule("VGA.vgamem_mb", "property", "VGA", "vgamem_mb"),
    Rule("qxl.vgamem_mb", "property", "qxl-vga", "vgamem_mb"),
    Rule("qxl.vram64_size_mb", "property", "qxl-vga", "vram64_size_mb"),
    Rule("vmware-svga.vgamem_mb", "property", "vmware-svga", "vgamem_mb"),
    Rule("pcie-root-port.hotplug", "property", "pcie-root-port", "hotplug"),
    Rule("virtio-balloon-pci.deflate-on-oom", "property", "virtio-balloon-pci", "deflate-on-oom"),
    Rule("virtio-balloon.free-page-reporting", "property", "virtio-balloon-pci", "free-page-reporting"),
    Rule("virtio-net.rss", "property", "virtio-net-pci", "rss"),
    Rule("acpi-index", "property", "virtio-net-pci", "acpi-index"),
    # --- device and object types (libvirt flag = QOM type unless written flag=type) -------
    *_types(
        "virtio-net=virtio-net-pci", "e1000", "rtl8139", "vfio-pci", "virtio-scsi-pci", "lsi=lsi53c895a",
        "megasas", "ich9-ahci", "piix3-usb-uhci", "piix4-usb-uhci", "usb-ehci", "ich9-usb-ehci1",
        "nec-usb-xhci", "qemu-xhci", "pci-ohci", "usb-hub", "usb-redir", "usb-storage", "usb-kbd",
        "usb-serial", "pci-bridge", "pcie-root-port", "ioh3420", "x3130-upstream", "xio3130-downstream",
        "pxb", "pxb-pcie", "dmi-to-pci-bridge=i82801b11-bridge", "pcie-pci-bridge", "VGA", "cirrus-vga",
        "vmware-svga", "qxl=qxl-vga", "virtio-gpu=virtio-gpu-pci", "virtio-vga", "bochs-display", "ramfb",
        "virtio-keyboard=virtio-keyboard-pci", "virtio-mouse=virtio-mouse-pci",
        "virtio-tablet=virtio-tablet-pci", "virtio-rng=virtio-rng-pci", "rng-random", "rng-egd",
        "rng-builtin", "virtio-iommu-pci", "intel-iommu", "nvdimm", "pc-dimm", "virtio-pmem-pci",
        "virtio-mem-pci", "isa-serial", "pci-serial", "pl011", "tpm-tis", "tpm-crb", "vmgenid",
        "vmcoreinfo", "pvpanic", "memory-backend-memfd", "vhost-vsock=vhost-vsock-pci", "sga",
        "hda-duplex", "hda-micro", "hda-output", "ich9-intel-hda", "usb-audio", "virtio-mmio",
        "i8042", "ivshmem-plain", "ivshmem-doorbell", "virtio-sound=virtio-sound-pci",
    ),
)

RULES_BY_FLAG: dict[str, Rule] = {r.flag: r for r in RULES}

# libvirt capability string -> this project's flag, where the two differ
LIBVIRT_ALIASES: dict[str, str] = {
    "device.json+hotplug": "device.json",
    "device.json": "device.json-broken-hotplug",  # libvirt's 6.2 name; never used for argv
}

# QOM types whose properties a probe records (device-list-properties / qom-list-properties):
# the devices the suite builds argv for, plus those named by property rules above.
PROBED_TYPES: tuple[str, ...] = tuple(dict.fromkeys([
    "virtio-net-pci", "virtio-blk-pci", "virtio-scsi-pci", "virtio-balloon-pci", "virtio-rng-pci",
    "virtio-serial-pci", "e1000", "e1000e", "rtl8139", "vmxnet3", "vfio-pci", "pcie-root-port",
    "qemu-xhci", "VGA", "qxl-vga", "vmware-svga", "virtio-vga", "virtio-gpu-pci", "i6300esb",
    *(r.what for r in RULES if r.kind == "property"),
]))


def derive_flags(caps: Capabilities) -> frozenset[str]:
    """Every flag whose rule holds for these raw capabilities."""
    return frozenset(r.flag for r in RULES if r.holds(caps))


def apply_flag(raw: dict[str, set], flag: str) -> bool:
    """Record the raw fact behind ``flag`` into ``raw`` (import direction).

    ``raw`` maps the Capabilities field names qom_types, type_properties (as
    "type.prop" strings), commands, events, schema, migration_capabilities,
    accelerators to sets. Returns False when no rule knows the flag or the
    fact cannot be expressed (machine attributes come with the machines).
    """
    rule = RULES_BY_FLAG.get(LIBVIRT_ALIASES.get(flag, flag))
    if rule is None:
        return False
    target = {
        "type": "qom_types", "command": "commands", "event": "events", "schema": "schema",
        "migration": "migration_capabilities", "accel": "accelerators",
    }.get(rule.kind)
    if rule.kind == "property":
        raw.setdefault("type_properties", set()).add(f"{rule.what}.{rule.prop}")
        return True
    if target is None:
        return False
    raw.setdefault(target, set()).add(rule.what)
    return True
