"""Host devices: PCI passthrough (vfio-pci), from <hostdev> and <interface type='hostdev'>."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx, rom_props
from conformance.domain.model import Hostdev, Interface
from conformance.errors import UnsupportedByQemu


def _host_address(dev: Hostdev | Interface) -> str:
    addr = dev.source_address
    if addr is None:
        return "0000:00:00.0"
    return f"{addr.domain or 0:04x}:{addr.bus or 0:02x}:{addr.slot or 0:02x}.{addr.function or 0}"


def hostdevs(ctx: Ctx) -> None:
    for dev in ctx.hostdevs:
        kind = dev.type if isinstance(dev, Hostdev) else "pci"
        if kind != "pci":
            raise UnsupportedByQemu(f"<hostdev type='{kind}'> is not supported by the argv builder",
                                    path=ctx.domain.source, line=dev.line)
        props: dict[str, Any] = {"driver": "vfio-pci", "host": _host_address(dev), "id": ctx.alias(dev)}
        if dev.teaming is not None and dev.teaming.type == "transient":
            props["failover_pair_id"] = dev.teaming.persistent
        if id(dev) in ctx.boot_index:
            props["bootindex"] = ctx.boot_index[id(dev)]
        props.update(ctx.address_props(dev))
        props.update(rom_props(dev.rom))
        ctx.device(props)
