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


# libvirt's probe tables (src/qemu/qemu_capabilities.c) a rule's kind stands for, unless the rule names its own
WHERE_BY_KIND = {
    "type": "virQEMUCapsObjectTypes (qom-list-types)",
    "property": "virQEMUCapsDeviceProps / virQEMUCapsObjectProps (device-list-properties, qom-list-properties)",
    "command": "virQEMUCapsCommands (query-commands)",
    "event": "virQEMUCapsEvents (query-qmp-schema events)",
    "schema": "virQEMUCapsQMPSchemaQueries (query-qmp-schema)",
    "migration": "virQEMUCapsMigration (query-migrate-capabilities)",
    "cmdline": "virQEMUCapsCommandLine (query-command-line-options)",
    "tpm-type": "virQEMUCapsTPMTypesToCaps (query-tpm-types)",
    "cpu-model": "virQEMUCapsProbeQMPCPUDefinitions (query-cpu-definitions)",
    "tpm-model": "virQEMUCapsTPMModelsToCaps (query-tpm-models)",
    "default": "virQEMUCapsDeviceProps* callbacks (device-list-properties default-value)",
    "sev": "virQEMUCapsObjectTypes + virQEMUCapsProbeQMPSEVCapabilities (cleared when query-sev-capabilities fails)",
    "accel": "virQEMUCapsObjectTypes / query-kvm",
    "machine-attr": "virQEMUCapsProbeQMPMachineTypes (query-machines)",
}


@dataclass(frozen=True)
class Rule:
    flag: str
    # "type" | "property" | "command" | "event" | "schema" | "machine-attr" | "migration" | "accel" | "cmdline"
    # | "tpm-type" | "cpu-model" | "arch-version" (no probe: libvirt sets the flag for an arch from a version)
    kind: str
    what: str  # QOM type, command, schema query, machine attribute, capability, accelerator, option, arch
    prop: str | None = None  # for kind "property" (and "cmdline": the option's parameter)
    min_version: str | None = None
    doc: str = ""
    where: str = ""  # where libvirt probes the flag (defaults per kind: WHERE_BY_KIND)

    @property
    def source(self) -> str:
        return self.where or WHERE_BY_KIND.get(self.kind, "")

    @property
    def fact(self) -> str:
        """The schema-set fact a probe records for kinds "cmdline" and "tpm-type"."""
        if self.kind == "cmdline":
            return f"cmdline:{self.what}" + (f"/{self.prop}" if self.prop else "")
        if self.kind == "default":  # TYPE.PROPERTY=VALUE: the property's default value
            return f"default:{self.what}.{self.prop}"
        return f"{self.kind}:{self.what}"

    def holds(self, caps: Capabilities) -> bool:
        if self.min_version and caps.version < _parse(self.min_version):
            return False
        match self.kind:
            case "cmdline" | "tpm-type" | "tpm-model" | "default":
                return self.fact in caps.schema
            case "sev":
                return self.what in caps.qom_types and caps.sev is not None
            case "cpu-model":
                return any(m.name == self.what for m in caps.cpu_models)
            case "arch-version":
                return caps.arch.startswith(tuple(self.what.split("|")))
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


def _props(qom_type: str, where: str, *pairs: str) -> list[Rule]:
    """'flag=property' (or 'property', flag TYPE.property) -> property rules of one type."""
    rules = []
    for pair in pairs:
        flag, _, prop = pair.partition("=")
        rules.append(Rule(flag if prop else f"{qom_type}.{flag}", "property", qom_type, prop or flag, where=where))
    return rules


def _kind(kind: str, *pairs: str) -> list[Rule]:
    """'flag=what' (or 'what', flag spelled alike) -> rules of one kind."""
    rules = []
    for pair in pairs:
        flag, _, what = pair.partition("=")
        rules.append(Rule(flag, kind, what or flag))
    return rules


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
    Rule("machine-hpet", "cmdline", "machine", "hpet", doc="-machine hpet=off, QEMU 8.0+"),
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
        "virtio-mem-pci", "isa-serial", "pci-serial", "pl011", "vmgenid",
        "vmcoreinfo", "pvpanic", "memory-backend-memfd", "vhost-vsock=vhost-vsock-pci", "sga",
        "hda-duplex", "hda-micro", "hda-output", "ich9-intel-hda", "usb-audio", "virtio-mmio",
        "i8042", "ivshmem-plain", "ivshmem-doorbell", "virtio-sound=virtio-sound-pci",
        "ccid-emulated=ccid-card-emulated", "ccid-passthru=ccid-card-passthru", "scsi-block", "mch",
        "pr-manager-helper", "x86-max-cpu=max-x86_64-cpu", "arm-max-cpu=max-arm-cpu", "dbus-vmstate",
        "vhost-user-gpu", "vhost-user-vga", "vhost-user-fs=vhost-user-fs-device", "vhost-scsi", "pvscsi", "dc390",
        "am53c974", "vhost-user-blk", "input-linux", "virtio-gpu-gl-pci", "virtio-vga-gl",
        "virtio-crypto=virtio-crypto-pci", "cryptodev-backend-lkcf", "pvpanic-pci", "thread-context",
        "virtio-pci-non-transitional=virtio-blk-pci-transitional", "virtio-input-host=virtio-input-host-pci",
        "mptsas1068", "usb-mtp", "acpi-erst",
    ),
    # --- commands, migration capabilities, command-line options, TPM back-ends, CPU models -------------
    *_kind("command", "rtc-reset-reinjection", "query-cpu-model-expansion", "query-cpu-definitions", "set-action",
           "query-dirty-rate", "sev-inject-launch-secret", "calc-dirty-rate", "query-stats", "query-stats-schemas",
           "blockdev-set-active", "display-reload"),
    Rule("migrate-rdma", "migration", "rdma-pin-all"),
    Rule("seccomp-sandbox", "cmdline", "sandbox"),
    Rule("spice-gl", "cmdline", "spice", "gl"),
    Rule("spice-rendernode", "cmdline", "spice", "rendernode"),
    Rule("vnc-power-control", "cmdline", "vnc", "power-control"),
    Rule("fsdev.multidevs", "cmdline", "fsdev", "multidevs"),
    Rule("run-with.async-teardown", "cmdline", "run-with", "async-teardown"),
    Rule("tpm-tis", "tpm-model", "tpm-tis"),
    Rule("tpm-crb", "tpm-model", "tpm-crb"),
    Rule("virtio-blk-pci.scsi.default.disabled", "default", "virtio-blk-pci", "scsi=false",
         where="virQEMUCapsDevicePropsVirtioBlkSCSIDefault (device-list-properties default-value)"),
    Rule("shim", "property", "generic-pc-machine", "shim", where="the x86 machine's 'shim' property (-shim)"),
    Rule("tpm-passthrough", "tpm-type", "passthrough"),
    Rule("tpm-emulator", "tpm-type", "emulator"),
    Rule("cpu-max", "cpu-model", "max", doc="query-cpu-definitions lists a 'max' model"),
    Rule("sev-guest", "sev", "sev-guest", doc="the sev-guest object, on a host whose SEV QEMU can use"),
    Rule("canonical-cpu-features", "arch-version", "x86_64|i686", min_version="4.1.0",
         where="not probed: libvirt's caps files have it for every x86 QEMU from 4.1 (its retired-flag history)",
         doc="CPU features are named canonically (dashes), so libvirt translates its own spellings"),
    # --- QMP schema queries (virQEMUCapsQMPSchemaQueries) ----------------------------------------------
    *_kind("schema",
           "aio.io_uring=blockdev-add/arg-type/+file/aio/^io_uring", "drive-nvme=blockdev-add/arg-type/+nvme",
           "rbd-encryption=blockdev-add/arg-type/+rbd/encrypt",
           "rbd-encryption-layering=blockdev-add/arg-type/+rbd/encrypt/parent",
           "rbd-encryption-luks-any=blockdev-add/arg-type/+rbd/encrypt/format/^luks-any",
           "blockdev.nbd.tls-hostname=blockdev-add/arg-type/+nbd/tls-hostname",
           "qcow2-discard-no-unref=blockdev-add/arg-type/+qcow2/discard-no-unref",
           "virtio-blk-vhost-vdpa=blockdev-add/arg-type/+virtio-blk-vhost-vdpa/$fdset",
           "migration-file-drop-cache=blockdev-add/arg-type/+file/drop-cache",
           "chardev-reconnect=chardev-add/arg-type/backend/+socket/data/reconnect",
           "chardev-reconnect-miliseconds=chardev-add/arg-type/backend/+socket/data/reconnect-ms",
           "nbd-tls=nbd-server-start/arg-type/tls-creds",
           "netdev.stream.reconnect=netdev_add/arg-type/+stream/reconnect",
           "netdev-stream-reconnect-miliseconds=netdev_add/arg-type/+stream/reconnect-ms",
           "netdev.vhost-vdpa=netdev_add/arg-type/+vhost-vdpa",
           "egl-headless.rendernode=query-display-options/ret-type/+egl-headless/rendernode",
           "sdl=query-display-options/ret-type/+sdl", "egl-headless=query-display-options/ret-type/+egl-headless",
           "display-dbus=query-display-options/ret-type/+dbus",
           "smp-dies=query-hotpluggable-cpus/ret-type/props/die-id",
           "smp-clusters=query-hotpluggable-cpus/ret-type/props/cluster-id",
           "screendump_device=screendump/arg-type/device", "numa.hmat=set-numa-node/arg-type/+hmat-lb",
           "sev-guest-kernel-hashes=object-add/arg-type/+sev-guest/kernel-hashes",
           "dirtyrate-param.mode=calc-dirty-rate/arg-type/mode",
           "chardev.qemu-vdagent=chardev-add/arg-type/backend/+qemu-vdagent",
           "iothread.thread-pool-max=object-add/arg-type/+iothread/thread-pool-max",
           "migration.blocked-reasons=query-migrate/ret-type/blocked-reasons",
           "screenshot-format-png=screendump/arg-type/format/^png",
           "migrate-incoming.exit-on-error=migrate-incoming/arg-type/exit-on-error"),
    # --- device, object and machine properties (virQEMUCapsDeviceProps*, virQEMUCapsObjectProps*) -------
    *_props("virtio-blk-pci", "virQEMUCapsDevicePropsVirtioBlk", "virtio-blk.queue-size=queue-size",
            "virtio-blk.iothread-mapping=iothread-vq-mapping"),
    *_props("virtio-scsi-pci", "virQEMUCapsDevicePropsVirtioSCSI",
            "virtio-scsi.iothread-mapping=iothread-vq-mapping"),
    *_props("usb-host", "virQEMUCapsDevicePropsUSBHost", "hostdevice", "guest-resets-all"),
    *_props("scsi-hd", "virQEMUCapsDevicePropsSCSIDisk", "scsi-disk.channel=channel", "rotation-rate=rotation_rate"),
    *_props("PIIX4_PM", "virQEMUCapsDevicePropsPiix4PM", "piix4.acpi-root-pci-hotplug=acpi-root-pci-hotplug"),
    *_props("usb-redir", "virQEMUCapsDevicePropsUSBRedir", "filter"),
    *_props("kvm-pit", "virQEMUCapsDevicePropsKVMPit", "kvm-pit-lost-tick-policy=lost_tick_policy"),
    *_props("virtio-gpu-pci", "virQEMUCapsDevicePropsVirtioGpu", "virtio-gpu.blob=blob"),
    *_props("intel-iommu", "virQEMUCapsDevicePropsIntelIOMMU", "intremap", "caching-mode", "eim", "device-iotlb",
            "aw-bits", "dma-translation"),
    *_props("mch", "virQEMUCapsDevicePropsMCH", "extended-tseg-mbytes"),
    *_props("nvdimm", "virQEMUCapsDevicePropsNVDIMM", "unarmed"),
    *_props("vhost-user-fs-device", "virQEMUCapsDevicePropsVhostUserFS", "vhost-user-fs.bootindex=bootindex"),
    *_props("virtio-mem-pci", "virQEMUCapsDevicePropsVirtioMemPCI", "prealloc", "dynamic-memslots"),
    *_props("virtio-iommu-pci", "virQEMUCapsDevicePropsVirtioIOMMU", "virtio-iommu.boot-bypass=boot-bypass"),
    *_props("memory-backend-file", "virQEMUCapsObjectPropsMemoryBackendFile", "pmem",
            "x-use-canonical-path-for-ramblock-id", "reserve", "prealloc-threads"),
    *_props("memory-backend-memfd", "virQEMUCapsObjectPropsMemoryBackendMemfd", "hugetlb"),
    *_props("max-x86_64-cpu", "virQEMUCapsObjectPropsMaxCPU", "cpu.migratable=migratable"),
    *_props("max-arm-cpu", "virQEMUCapsObjectPropsMaxCPU", "cpu.kvm-no-adjvtime=kvm-no-adjvtime"),
    *_props("virt-machine", "virQEMUCapsMachinePropsVirt", "machine.virt.iommu=iommu", "machine.virt.ras=ras"),
    *_props("none-machine", "virQEMUCapsMachinePropsGeneric",
            "confidential-guest-support=confidential-guest-support"),
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


# QOM types of the rules above that are objects, not devices (a probe lists their properties with
# qom-list-properties: device-list-properties refuses them)
PROBED_OBJECT_TYPES: frozenset[str] = frozenset({"memory-backend-file", "memory-backend-memfd", "thread-context"})


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
        "migration": "migration_capabilities", "accel": "accelerators", "sev": "qom_types",
    }.get(rule.kind)
    if rule.kind in ("cmdline", "tpm-type", "tpm-model", "default"):
        raw.setdefault("schema", set()).add(rule.fact)
        return True
    if rule.kind == "property":
        raw.setdefault("type_properties", set()).add(f"{rule.what}.{rule.prop}")
        return True
    if target is None:
        return False
    raw.setdefault(target, set()).add(rule.what)
    return True
