"""s390x channel I/O (CCW) addresses: virtio devices of s390-ccw-virtio machines get 0xfe.0.NNNN."""

from __future__ import annotations

from conformance.argv.context import Ctx
from conformance.argv.defaults import disk_bus
from conformance.domain.model import Address

_VIRTIO_CONTROLLERS = {("scsi", "virtio-scsi"), ("virtio-serial", None), ("virtio-serial", "virtio")}


def _virtio_devices(ctx: Ctx) -> list:
    """Devices that sit on the CCW bus, in libvirt's device iteration order."""
    d = ctx.domain.devices
    out: list = [k for k in ctx.disks if disk_bus(k) == "virtio"]
    out += [n for n in d.interfaces if n.type != "hostdev" and (n.model or "virtio") == "virtio"]
    out += [c for c in ctx.controllers if (c.type, c.model) in _VIRTIO_CONTROLLERS]
    out += [i for i in ctx.inputs if i.bus == "virtio"]
    out += [f for f in d.filesystems]
    if ctx.memballoon is not None and ctx.memballoon.model == "virtio":
        out.append(ctx.memballoon)
    out += [r for r in d.rngs if r.model == "virtio"]
    return out


def assign_ccw_addresses(ctx: Ctx) -> None:
    """Explicit CCW addresses are kept; the others take the next free devno on channel subsystem 0xfe."""
    if not (ctx.is_s390 and ctx.machine_name.startswith("s390-ccw-virtio")):
        return
    devices = _virtio_devices(ctx)
    used = {(int(a.extra.get("cssid", "0xfe"), 0), int(a.extra.get("ssid", "0"), 0), int(a.extra.get("devno", "0"), 0))
            for a in (ctx.address(dev) for dev in devices) if a is not None and a.type == "ccw"}
    devno = 0
    for dev in devices:
        if ctx.address(dev) is not None:
            continue
        while (0xFE, 0, devno) in used:
            devno += 1
        used.add((0xFE, 0, devno))
        ctx.addresses[id(dev)] = Address(type="ccw", extra={"cssid": "0xfe", "ssid": "0x0", "devno": f"{devno:#06x}"})
