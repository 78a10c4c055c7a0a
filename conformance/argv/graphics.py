"""Graphics: VNC and SPICE (other types are refused with a clear error)."""

from __future__ import annotations

from conformance.argv.context import Ctx
from conformance.argv.harness import (
    DBUS_SOCKET_DIR,
    DOMAIN_ID,
    HARNESS_RENDER_NODE,
    SPICE_PASSWORD_CONFIGURED,
    SPICE_TLS_X509_DIR,
    domain_dir,
    spice_tls,
)
from conformance.argv.options import escape_opt_value
from conformance.domain.model import Graphics
from conformance.errors import UnsupportedByQemu

# libvirt's defaults for graphics that listen on an address without naming one (qemu.conf)
DEFAULT_LISTEN = "127.0.0.1"
# ports libvirt writes for automatically allocated ones when it builds a command line without
# starting QEMU (its "pretend" start, which the test suite and domxml-to-native use)
PRETEND_SPICE_PORT, PRETEND_SPICE_TLS_PORT = 5901, 5902
# SPICE channel names in libvirt's order (the order of tls-channel= / plaintext-channel=)
SPICE_CHANNELS = ("main", "display", "inputs", "cursor", "playback", "record", "smartcard", "usbredir")


def graphics(ctx: Ctx) -> None:
    for gr in ctx.domain.devices.graphics:
        if gr.type == "vnc":
            _vnc(ctx, gr)
        elif gr.type == "spice":
            _spice(ctx, gr)
        elif gr.type == "sdl":
            if gr.attrs.get("fullscreen") == "yes":
                ctx.add("-full-screen")
            ctx.add("-display", "sdl" + (",gl=on" if _first(gr, "gl", "enable") == "yes" else ""))
        elif gr.type == "egl-headless":
            node = _first(gr, "gl", "rendernode") or HARNESS_RENDER_NODE
            ctx.add("-display", f"egl-headless,rendernode={escape_opt_value(node)}")
        elif gr.type == "dbus":
            _dbus(ctx, gr)
        elif gr.type == "rdp":
            continue  # served by a helper process over the D-Bus display, not by QEMU itself
        else:
            raise UnsupportedByQemu(f"<graphics type='{gr.type}'> is not supported by the argv builder",
                                    path=ctx.domain.source, line=gr.line)


def _dbus(ctx: Ctx, gr: Graphics) -> None:
    """The D-Bus display: peer-to-peer, or on a bus (the domain's private bus socket by default)."""
    a = gr.attrs
    if a.get("p2p") == "yes":
        opt = "dbus,p2p=on"
    else:
        addr = a.get("address") or f"unix:path={DBUS_SOCKET_DIR}/{DOMAIN_ID}-{ctx.domain.name[:20]}-dbus.sock"
        opt = f"dbus,addr={escape_opt_value(addr)}"
    if _first(gr, "gl", "enable") == "yes":
        opt += ",gl=on"
        node = _first(gr, "gl", "rendernode")
        if node:
            opt += f",rendernode={escape_opt_value(node)}"
    audio = next((c.get("id") for c in gr.extra if getattr(c, "tag", None) == "audio" and c.get("id")), None)
    if audio:
        opt += f",audiodev=audio{audio}"
    ctx.add("-display", opt)


def _listen(gr: Graphics) -> dict[str, str]:
    """The first listen: a <listen> element, else the legacy listen= attribute, else an address listen."""
    if gr.listens:
        return gr.listens[0]
    if gr.attrs.get("listen"):
        return {"type": "address", "address": gr.attrs["listen"]}
    return {"type": "address"}


def _vnc(ctx: Ctx, gr: Graphics) -> None:
    a = gr.attrs
    listen = next((li for li in gr.listens), {})
    if listen.get("type") == "none":
        opt = "none"
    elif listen.get("type") == "socket" or a.get("socket"):
        path = listen.get("socket") or a.get("socket") or \
            f"{domain_dir(ctx.domain.name, ctx.modern_libvirt)}/vnc.sock"  # an auto socket in the domain's folder
        opt = f"{'vnc=' if ctx.modern_libvirt else ''}unix:{escape_opt_value(path)}"
    else:
        host = listen.get("address") or a.get("listen") or DEFAULT_LISTEN
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        port = int(a.get("port", "-1"))
        display = 0 if port < 5900 else port - 5900
        opt = f"{host}:{display}"
        if a.get("websocket"):
            opt += f",websocket={a['websocket']}"
    if a.get("sharePolicy"):
        opt += f",share={a['sharePolicy']}"
    if a.get("passwd") is not None:
        opt += ",password=on"
    if a.get("powerControl") == "yes":
        opt += ",power-control=on"
    audio = next((c.get("id") for c in gr.extra if getattr(c, "tag", None) == "audio" and c.get("id")), None)
    opt += f",audiodev=audio{audio or ctx.audio_id}"
    ctx.add("-vnc", opt)
    if a.get("keymap"):
        ctx.add("-k", a["keymap"])


def _children(gr: Graphics, tag: str) -> list:
    return [c for c in gr.extra if getattr(c, "tag", None) == tag]


def _first(gr: Graphics, tag: str, attr: str) -> str | None:
    return next((c.get(attr) for c in _children(gr, tag) if c.get(attr)), None)


def _spice_ports(gr: Graphics, tls_configured: bool) -> tuple[int, int]:
    """(port, tls-port) as libvirt fills them without allocating: auto ports get 5901 / 5902."""
    a = gr.attrs
    port, tls_port = int(a.get("port", "0")), int(a.get("tlsPort", "0"))
    autoport = a.get("autoport") == "yes" or (port == -1 and tls_port == -1)
    need_port = need_tls = False
    if autoport:
        modes = [c.get("mode", "any") for c in _children(gr, "channel")]
        need_tls = "secure" in modes
        need_port = "insecure" in modes
        default = a.get("defaultMode", "any")
        if default == "secure":
            need_tls = True
        elif default == "insecure":
            need_port = True
        else:
            need_tls = need_tls or tls_configured
            need_port = True
    if need_port or port == -1:
        port = PRETEND_SPICE_PORT
    if need_tls or tls_port == -1:
        tls_port = PRETEND_SPICE_TLS_PORT
    return port, tls_port


def _spice(ctx: Ctx, gr: Graphics) -> None:
    if not ctx.caps.has("spice"):
        raise UnsupportedByQemu("spice graphics are not supported with this QEMU", path=ctx.domain.source,
                                line=gr.line)
    a = gr.attrs
    listen = _listen(gr)
    opts: list[str] = []
    secure = insecure = False
    kind = listen.get("type", "address")
    if kind == "socket":
        path = listen.get("socket") or f"{domain_dir(ctx.domain.name, ctx.modern_libvirt)}/spice.sock"
        opts.append(f"unix=on,addr={escape_opt_value(path)}")
        insecure = True
    elif kind in ("address", "network"):
        port, tls_port = _spice_ports(gr, spice_tls(ctx.modern_libvirt))
        if port > 0:
            opts.append(f"port={port}")
            insecure = True
        if tls_port > 0:
            opts.append(f"tls-port={tls_port}")
            secure = True
        if port > 0 or tls_port > 0:
            opts.append(f"addr={listen.get('address') or DEFAULT_LISTEN}")
        else:
            opts.append("port=0")  # neither a port nor a TLS port: no plain listener either
    elif kind == "none":
        opts.append("port=0")
        insecure = True
    mouse = _first(gr, "mouse", "mode")
    if mouse in ("server", "client"):
        opts.append(f"agent-mouse={'off' if mouse == 'server' else 'on'}")
    if a.get("passwd") is None and not SPICE_PASSWORD_CONFIGURED:
        opts.append("disable-ticketing=on")
    if secure:
        opts.append(f"x509-dir={SPICE_TLS_X509_DIR}")
    default = a.get("defaultMode", "any")
    if default == "secure" or default == "insecure":
        if not (secure if default == "secure" else insecure):
            raise UnsupportedByQemu(f"spice defaultMode {default} requested, but no such connection is available",
                                    path=ctx.domain.source, line=gr.line)
        opts.append(f"{'tls' if default == 'secure' else 'plaintext'}-channel=default")
    modes = {c.get("name"): c.get("mode", "any") for c in _children(gr, "channel")}
    for name in SPICE_CHANNELS:
        mode = modes.get(name, "any")
        if mode == "any":
            continue
        if not (secure if mode == "secure" else insecure):
            raise UnsupportedByQemu(f"spice {mode} channel {name} requested, but no such connection is available",
                                    path=ctx.domain.source, line=gr.line)
        opts.append(f"{'tls' if mode == 'secure' else 'plaintext'}-channel={name}")
    for tag, opt in (("image", "image-compression"), ("jpeg", "jpeg-wan-compression"),
                     ("zlib", "zlib-glz-wan-compression"), ("playback", "playback-compression")):
        value = _first(gr, tag, "compression")
        if value:
            opts.append(f"{opt}={value}")
    streaming = _first(gr, "streaming", "mode")
    if streaming:
        opts.append(f"streaming-video={streaming}")
    if _first(gr, "clipboard", "copypaste") == "no":
        opts.append("disable-copy-paste=on")
    if _first(gr, "filetransfer", "enable") == "no":
        opts.append("disable-agent-file-xfer=on")
    if _first(gr, "gl", "enable") == "yes":
        opts.append("gl=on")
        rendernode = _first(gr, "gl", "rendernode") or HARNESS_RENDER_NODE
        if rendernode:
            opts.append(f"rendernode={escape_opt_value(rendernode)}")
    opts.append("seamless-migration=on")  # libvirt always turns it on
    ctx.add("-spice", ",".join(opts))
    if a.get("keymap"):
        ctx.add("-k", a["keymap"])
