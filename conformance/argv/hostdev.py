"""Host devices: PCI passthrough (vfio-pci), from <hostdev> and <interface type='hostdev'>."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx, rom_props
from conformance.argv.harness import SCSI_GENERIC_DEVICE, VHOST_SCSI_FD
from conformance.argv.storage_source import network_props
from conformance.domain.model import Disk, DiskSource, Hostdev, Interface
from conformance.errors import UnsupportedByQemu


def _host_address(dev: Hostdev | Interface) -> str:
    addr = dev.source_address
    if addr is None:
        return "0000:00:00.0"
    return f"{addr.domain or 0:04x}:{addr.bus or 0:02x}:{addr.slot or 0:02x}.{addr.function or 0}"


def source_address(dev: Hostdev) -> dict[str, str] | None:
    """The <source><address .../> of a non-PCI host device (kept verbatim by the model)."""
    el = next((c for c in dev.source_children if getattr(c, "tag", None) == "address"), None)
    return dict(el.attrib) if el is not None else None


def _usb_host(ctx: Ctx, dev: Hostdev) -> None:
    """A host USB device by bus/device number: usb-host on the guest's USB port."""
    src = source_address(dev)
    if src is None or src.get("bus") is None or src.get("device") is None:
        raise UnsupportedByQemu("<hostdev type='usb'> by vendor/product needs the host's USB devices; name the "
                                "device by <address bus= device=>", path=ctx.domain.source, line=dev.line)
    props: dict[str, Any] = {"driver": "usb-host",
                             "hostdevice": f"/dev/bus/usb/{int(src['bus'], 0):03d}/{int(src['device'], 0):03d}",
                             "id": ctx.alias(dev)}
    reset = dev.source_attrs.get("guestReset")
    if reset is not None:  # off: no guest resets; uninitialized: only of a device not yet set up; on: all
        props["guest-reset"] = reset != "off"
        props["guest-resets-all"] = reset == "on"
    if id(dev) in ctx.boot_index:
        props["bootindex"] = ctx.boot_index[id(dev)]
    props.update(ctx.address_props(dev))
    ctx.device(props)


def _scsi_generic(ctx: Ctx, dev: Hostdev) -> None:
    """qemuBuildHostdevSCSICommandLine: the host's SCSI generic node as a host_device -blockdev (its effective
    node: no auto-read-only, no discard) and a scsi-generic device at the hostdev's drive address."""
    node = f"libvirt-{ctx.node_index[id(dev)]}-backend"
    if dev.source_attrs.get("protocol") == "iscsi":  # an iSCSI LUN: the iscsi driver, as for an iSCSI disk
        hosts = [dict(c.attrib) for c in dev.source_children if getattr(c, "tag", None) == "host"]
        name = dev.source_attrs.get("name", "")
        attrs = {**dev.source_attrs, "name": name if "/" in name else f"{name}/0"}  # LUN 0 unless named
        others = [c for c in dev.source_children if getattr(c, "tag", None) != "host"]
        source = Disk(type="network", source=DiskSource(attrs=attrs, hosts=hosts, children=others))
        backend = {k: v for k, v in network_props(ctx, source, {}).items() if v is not None}
    else:
        backend = {"driver": "host_device", "filename": SCSI_GENERIC_DEVICE}
    ctx.blockdev_arg({**backend, "node-name": node, "read-only": dev.readonly})
    props: dict[str, Any] = {"driver": "scsi-generic", "drive": node, "id": ctx.alias(dev)}
    if id(dev) in ctx.boot_index:
        props["bootindex"] = ctx.boot_index[id(dev)]
    addr = ctx.address(dev)
    assert addr is not None  # every SCSI host device has a drive address (defaults._scsi_hostdev_addresses)
    cont = ctx.controller("scsi", addr.controller or 0)
    props["bus"] = f"{ctx.alias(cont) if cont else 'scsi0'}.{addr.bus or 0}"
    if cont is not None and cont.model in ("lsilogic", "ncr53c90", "dc390", "am53c974"):
        props["scsi-id"] = addr.unit or 0  # qemuBuildDeviceAddressProps: a unit number only on these HBAs
    else:
        props.update({"channel": addr.bus or 0, "scsi-id": addr.target or 0, "lun": addr.unit or 0})
    ctx.device(props)


def _display_props(dev: Hostdev | Interface) -> dict[str, Any]:
    attrs = dev.attrs if isinstance(dev, Hostdev) else {}
    props: dict[str, Any] = {}
    if attrs.get("display") in ("on", "off"):
        props["display"] = attrs["display"]
    if attrs.get("ramfb") == "on":
        props["ramfb"] = True
    return props


def hostdevs(ctx: Ctx) -> None:
    for dev in ctx.hostdevs:
        addr = ctx.address(dev)
        if addr is not None and addr.type == "unassigned":
            continue  # reserved for the guest, never given to QEMU
        kind = dev.type if isinstance(dev, Hostdev) else "pci"
        if kind == "usb" and isinstance(dev, Hostdev):
            _usb_host(ctx, dev)
            continue
        # ramfb needs a device that is never hot-unplugged
        driver = "vfio-pci-nohotplug" if _display_props(dev).get("ramfb") else "vfio-pci"
        if kind == "mdev" and isinstance(dev, Hostdev) and dev.attrs.get("model", "vfio-pci") == "vfio-pci":
            uuid = (source_address(dev) or {}).get("uuid", "")
            props: dict[str, Any] = {"driver": driver, "id": ctx.alias(dev),
                                     "sysfsdev": f"/sys/bus/mdev/devices/{uuid}",
                                     "display": dev.attrs.get("display", "off"), **_display_props(dev)}
            if id(dev) in ctx.boot_index:
                props["bootindex"] = ctx.boot_index[id(dev)]
            props.update(ctx.address_props(dev))
            ctx.device(props)
            continue
        if kind == "scsi_host" and isinstance(dev, Hostdev) and dev.source_attrs.get("protocol") == "vhost":
            model = dev.attrs.get("model", "")  # virtio-transitional / virtio-non-transitional
            driver = "vhost-scsi-pci" + (f"-{model.removeprefix('virtio-')}" if model.startswith("virtio-") else "")
            props = {"driver": driver, "wwpn": dev.source_attrs.get("wwpn"), "vhostfd": str(VHOST_SCSI_FD),
                     "id": ctx.alias(dev)}
            if id(dev) in ctx.boot_index:
                props["bootindex"] = ctx.boot_index[id(dev)]
            ctx.device({**props, **ctx.address_props(dev)})
            continue
        if kind == "scsi" and isinstance(dev, Hostdev):
            _scsi_generic(ctx, dev)
            continue
        if kind != "pci":
            raise UnsupportedByQemu(f"<hostdev type='{kind}'> is not supported by the argv builder",
                                    path=ctx.domain.source, line=dev.line)
        props = {"driver": driver, "host": _host_address(dev), "id": ctx.alias(dev), **_display_props(dev)}
        if dev.teaming is not None and dev.teaming.type == "transient":
            props["failover_pair_id"] = dev.teaming.persistent
        if id(dev) in ctx.boot_index:
            props["bootindex"] = ctx.boot_index[id(dev)]
        props.update(ctx.address_props(dev))
        props.update(rom_props(dev.rom))
        ctx.device(props)
