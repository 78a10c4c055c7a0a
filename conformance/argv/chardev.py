"""Character devices: -chardev back-ends and the serial/parallel/channel/console front-ends."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx
from conformance.argv.defaults import console_is_serial
from conformance.domain.model import Chardev
from conformance.errors import UnsupportedByQemu

MONITOR_FD = 1729  # libvirt's test harness passes pre-opened listening sockets as this fd (fixed_env)


def chardev_backend(ctx: Ctx, chr_: Chardev, ident: str) -> None:
    """-chardev TYPE,id=IDENT,... (libvirt keeps the comma syntax for -chardev)."""
    t = chr_.type
    src = chr_.source_attr
    opts: list[str]
    if t in ("pty", "null", "vc", "stdio"):
        opts = [t, f"id={ident}"]
    elif t in ("file", "pipe"):
        opts = [t, f"id={ident}", f"path={src('path')}"]
        if t == "file" and src("append"):
            opts.append(f"append={src('append')}")
    elif t == "dev":
        opts = ["serial" if chr_.kind != "parallel" else "parallel", f"id={ident}", f"path={src('path')}"]
    elif t == "unix":
        opts = ["socket", f"id={ident}"]
        if src("mode") == "bind":
            opts += [f"fd={MONITOR_FD}", "server=on", "wait=off"]
        else:
            opts.append(f"path={src('path')}")
    elif t == "tcp":
        opts = ["socket", f"id={ident}", f"host={src('host')}", f"port={src('service')}"]
        if chr_.protocol == "telnet":
            opts.append("telnet=on")
        if src("mode") == "bind":
            opts += ["server=on", "wait=off"]
    elif t == "udp":
        connect = next((s.attrs for s in chr_.sources if s.attrs.get("mode", "connect") == "connect"), {})
        bind = next((s.attrs for s in chr_.sources if s.attrs.get("mode") == "bind"), {})
        opts = ["udp", f"id={ident}", f"host={connect.get('host', '')}", f"port={connect.get('service', '')}"]
        if bind:
            opts += [f"localaddr={bind.get('host', '')}", f"localport={bind.get('service', '')}"]
    elif t == "spicevmc":
        opts = ["spicevmc", f"id={ident}", f"name={chr_.target_attrs.get('name', 'vdagent')}"]
    else:
        raise UnsupportedByQemu(f"character device type {t!r} is not supported by the argv builder",
                                path=ctx.domain.source, line=chr_.line)
    if chr_.log.get("file"):
        ctx.add("-add-fd", f"set=0,fd=1751,opaque={ident[4:]}-log")
        opts += ["logfile=/dev/fdset/0", f"logappend={chr_.log.get('append', 'on')}"]
    ctx.add("-chardev", ",".join(opts))


def serials(ctx: Ctx) -> None:
    for i, ser in enumerate(ctx.serials):
        alias = ctx.alias(ser) or f"serial{i}"
        ident = f"char{alias}"
        chardev_backend(ctx, ser, ident)
        target = ser.target_type
        model = ser.target_model
        if ctx.is_arm_virt and target in (None, "system") and model in (None, "pl011"):
            ctx.add("-serial", f"chardev:{ident}")
            continue
        if ctx.is_s390 and target in (None, "sclp-serial"):
            ctx.device({"driver": model or "sclpconsole", "chardev": ident, "id": alias})
            continue
        driver = model or {"pci-serial": "pci-serial", "usb-serial": "usb-serial", "isa-debug": "isa-debugcon"}.get(
            target or "", "isa-serial")
        props: dict[str, Any] = {"driver": driver, "chardev": ident, "id": alias}
        if driver == "isa-serial":
            port = ser.target_attrs.get("port")
            props["index"] = int(port) if port is not None else i
        props.update(ctx.address_props(ser))
        ctx.device(props)


def parallels(ctx: Ctx) -> None:
    for i, par in enumerate(ctx.domain.devices.parallels):
        alias = ctx.alias(par) or f"parallel{i}"
        chardev_backend(ctx, par, f"char{alias}")
        ctx.device({"driver": "isa-parallel", "chardev": f"char{alias}", "id": alias})


def _virtio_serial_props(ctx: Ctx, chr_: Chardev) -> dict[str, Any]:
    addr = ctx.address(chr_)
    if addr is None or addr.type != "virtio-serial":
        return {}
    cont = ctx.controller("virtio-serial", addr.controller or 0)
    bus = ctx.alias(cont) if cont else f"virtio-serial{addr.controller or 0}"
    return {"bus": f"{bus}.{addr.bus or 0}", "nr": int(addr.port or 0)}


def channels(ctx: Ctx) -> None:
    for i, chan in enumerate(ctx.domain.devices.channels):
        alias = ctx.alias(chan) or f"channel{i}"
        ident = f"char{alias}"
        if chan.target_type == "guestfwd":
            chardev_backend(ctx, chan, ident)
            addr = chan.target_attrs
            ctx.add("-netdev", f"user,guestfwd=tcp:{addr.get('address')}:{addr.get('port')},chardev={ident},"
                               f"id=user-{alias}")
            continue
        if chan.target_type != "virtio":
            raise UnsupportedByQemu(f"<channel> target {chan.target_type!r} is not supported by the argv builder",
                                    path=ctx.domain.source, line=chan.line)
        chardev_backend(ctx, chan, ident)
        props: dict[str, Any] = {"driver": "virtserialport", **_virtio_serial_props(ctx, chan), "chardev": ident,
                                 "id": alias}
        if chan.target_attrs.get("name"):
            props["name"] = chan.target_attrs["name"]
        ctx.device(props)


def consoles(ctx: Ctx) -> None:
    for i, con in enumerate(ctx.consoles):
        if i == 0 and console_is_serial(ctx, con) and ctx.serials:
            continue  # the same device as serial0
        alias = ctx.alias(con) or f"console{i}"
        ident = f"char{alias}"
        if con.target_type == "virtio":
            chardev_backend(ctx, con, ident)
            ctx.device({"driver": "virtconsole", **_virtio_serial_props(ctx, con), "chardev": ident, "id": alias})
        elif con.target_type in ("sclp", "sclplm"):
            chardev_backend(ctx, con, ident)
            ctx.device({"driver": "sclpconsole" if con.target_type == "sclp" else "sclplmconsole",
                        "chardev": ident, "id": alias})
        else:
            raise UnsupportedByQemu(f"<console> target {con.target_type!r} is not supported by the argv builder",
                                    path=ctx.domain.source, line=con.line)
