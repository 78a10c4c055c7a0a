"""Graphics: VNC (SPICE and others are refused with a clear error)."""

from __future__ import annotations

from conformance.argv.context import Ctx
from conformance.errors import UnsupportedByQemu


def graphics(ctx: Ctx) -> None:
    for gr in ctx.domain.devices.graphics:
        if gr.type != "vnc":
            raise UnsupportedByQemu(f"<graphics type='{gr.type}'> is not supported by the argv builder",
                                    path=ctx.domain.source, line=gr.line)
        a = gr.attrs
        listen = next((li for li in gr.listens), {})
        if listen.get("type") == "none":
            opt = "none"
        elif listen.get("type") == "socket" or a.get("socket"):
            opt = f"unix:{listen.get('socket') or a.get('socket')}"
        else:
            host = listen.get("address") or a.get("listen") or "127.0.0.1"
            port = int(a.get("port", "-1"))
            display = 0 if port < 5900 else port - 5900
            opt = f"{host}:{display}"
            if a.get("websocket"):
                opt += f",websocket={a['websocket']}"
        if a.get("passwd") is not None:
            opt += ",password=on"
        opt += f",audiodev=audio{ctx.audio_id}"
        ctx.add("-vnc", opt)
        if a.get("keymap"):
            ctx.add("-k", a["keymap"])
