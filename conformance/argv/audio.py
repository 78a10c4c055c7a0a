"""Audio back-ends (-audiodev) and sound cards."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx
from conformance.errors import DomainInvalid

_SOUND = {"ich6": "intel-hda", "ich9": "ich9-intel-hda", "ac97": "AC97", "es1370": "ES1370", "sb16": "sb16",
          "usb": "usb-audio", "ich7": "intel-hda"}


def default_audio_backend(ctx: Ctx) -> str | None:
    """The <audio> libvirt adds when the domain has none (qemu.conf defaults, no QEMU_AUDIO_DRV):
    the last VNC or SPICE display decides ('none' / 'spice'), SDL passes host audio through (none
    added), other displays add nothing, and a domain without graphics gets 'none'."""
    graphics = ctx.domain.devices.graphics
    if not graphics:
        return "none"
    backend, add = "none", False
    for gr in graphics:
        if gr.type == "vnc":
            backend, add = "none", True
        elif gr.type == "spice":
            backend, add = "spice", True
        elif gr.type == "sdl":
            backend, add = "", False  # passthrough of the host's audio: without QEMU_AUDIO_DRV none is added
    return backend if add else None


def audiodevs(ctx: Ctx) -> None:
    audios = ctx.domain.devices.audios
    if not audios:
        backend = default_audio_backend(ctx)
        if backend is not None:
            ctx.add("-audiodev", _json({"id": "audio1", "driver": backend}))
        return
    for audio in audios:
        props: dict[str, Any] = {"id": f"audio{audio.id}", "driver": audio.type}
        ctx.add("-audiodev", _json(props))


def _json(props: dict[str, Any]) -> str:
    import json

    return json.dumps(props, separators=(",", ":"))


def sounds(ctx: Ctx) -> None:
    for snd in ctx.domain.devices.sounds:
        driver = _SOUND.get(snd.model)
        if driver is None:
            raise DomainInvalid(f"unknown sound model {snd.model!r}", path=ctx.domain.source, line=snd.line)
        alias = ctx.alias(snd)
        props: dict[str, Any] = {"driver": driver, "id": alias}
        if snd.model in ("ac97", "es1370", "sb16", "usb"):
            props["audiodev"] = f"audio{snd.audio_id or ctx.audio_id}"
        props.update(ctx.address_props(snd))
        ctx.device(props)
        if driver.endswith("intel-hda"):
            codecs = snd.codecs or ["duplex"]
            for n, codec in enumerate(codecs):
                ctx.device({"driver": f"hda-{codec}", "id": f"{alias}-codec{n}", "bus": f"{alias}.0", "cad": n,
                            "audiodev": f"audio{snd.audio_id or ctx.audio_id}"})
