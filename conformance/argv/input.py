"""Input devices: USB and virtio mice, tablets and keyboards, virtio passthrough (PS/2 is built in)."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx
from conformance.errors import DomainInvalid, UnsupportedByQemu

_USB = {"mouse": "usb-mouse", "tablet": "usb-tablet", "keyboard": "usb-kbd"}
_VIRTIO = {"mouse": "virtio-mouse-pci", "tablet": "virtio-tablet-pci", "keyboard": "virtio-keyboard-pci",
           "passthrough": "virtio-input-host-pci"}


def usb_bus_props(ctx: Ctx, dev) -> dict[str, Any]:
    addr = ctx.address(dev)
    if addr is None or addr.type != "usb":
        return {}
    cont = ctx.controller("usb", addr.bus or 0)
    return {"bus": f"{ctx.alias(cont) if cont else 'usb'}.0", "port": addr.port}


def evdev_object(ctx: Ctx, inp) -> None:
    """<input type='evdev'>: a host evdev device passed through by an input-linux object (qemuBuildInputEvdevProps):
    its evdev path, repeat when set, grab_all for grab='all', grab-toggle when set."""
    if not ctx.caps.has("input-linux"):
        raise UnsupportedByQemu("<input type='evdev'>: unsupported configuration: input-linux is not supported by "
                                "this QEMU binary", path=ctx.domain.source, line=inp.line)
    repeat = inp.source.get("repeat")
    props: dict[str, Any] = {"qom-type": "input-linux", "id": ctx.alias(inp), "evdev": inp.source.get("dev")}
    if repeat in ("on", "off"):
        props["repeat"] = repeat == "on"
    if inp.source.get("grab") == "all":
        props["grab_all"] = True
    if inp.source.get("grabToggle"):
        props["grab-toggle"] = inp.source["grabToggle"]
    ctx.object(props)


def inputs(ctx: Ctx) -> None:
    for inp in ctx.inputs:
        if inp.type == "evdev":
            evdev_object(ctx, inp)
            continue
        if inp.bus in ("ps2", None, "xen"):
            continue
        props: dict[str, Any]
        if inp.bus == "usb":
            driver = _USB.get(inp.type)
            if driver is None:
                raise DomainInvalid(f"unknown USB input type {inp.type!r}", path=ctx.domain.source, line=inp.line)
            props = {"driver": driver, "id": ctx.alias(inp), **usb_bus_props(ctx, inp)}
        elif inp.bus == "virtio":
            driver = _VIRTIO.get(inp.type)
            if driver is None:
                raise DomainInvalid(f"unknown virtio input type {inp.type!r}", path=ctx.domain.source, line=inp.line)
            props = {"driver": driver, "id": ctx.alias(inp)}
            if inp.type == "passthrough":
                props["evdev"] = inp.source.get("evdev")
            props.update(ctx.address_props(inp))
        else:
            raise DomainInvalid(f"unknown input bus {inp.bus!r}", path=ctx.domain.source, line=inp.line,
                                hint="use ps2, usb or virtio")
        ctx.device(props, virtio=inp if inp.bus == "virtio" else None)
