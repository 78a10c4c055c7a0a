"""Audio back-ends (-audiodev) and sound cards."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx
from conformance.argv.options import compact_json
from conformance.errors import DomainInvalid

_SOUND = {"ich6": "intel-hda", "ich9": "ich9-intel-hda", "ac97": "AC97", "es1370": "ES1370", "sb16": "sb16",
          "usb": "usb-audio", "ich7": "intel-hda", "virtio": "virtio-sound-pci"}


def default_audio_backend(ctx: Ctx) -> str | None:
    """The <audio> libvirt adds when the domain has none (qemu.conf defaults, no QEMU_AUDIO_DRV):
    the last VNC, SPICE or RDP display decides ('none' / 'spice' / 'dbus'), SDL passes host audio through
    (none added), other displays add nothing, and a domain without graphics gets 'none'."""
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
        elif gr.type == "rdp":
            backend, add = "dbus", True  # the RDP server (qemu-rdp) takes the audio over D-Bus
    return backend if add else None


def audiodevs(ctx: Ctx) -> None:
    audios = ctx.domain.devices.audios
    if not audios:
        backend = default_audio_backend(ctx)
        if backend is not None:
            ctx.add("-audiodev", _json({"id": "audio1", "driver": backend}))
        return
    for audio in audios:
        ctx.add("-audiodev", _json(audiodev_props(audio)))


# libvirt <audio type=> -> QEMU's audiodev driver where the names differ
_DRIVERS = {"pulseaudio": "pa", "file": "wav"}
# audio-level attributes QEMU takes (per type), XML name -> (QEMU name, kind); others (sdl driver, pipewire
# runtimeDir) go to QEMU's environment, not to -audiodev
_TOP = {"timerPeriod": ("timer-period", int), "path": ("path", str), "serverName": ("server", str),
        "tryMMap": ("try-mmap", bool), "exclusive": ("exclusive", bool), "dspPolicy": ("dsp-policy", int)}
_TOP_BY_TYPE = {"file": ("path",), "pulseaudio": ("serverName",), "oss": ("tryMMap", "exclusive", "dspPolicy")}
# <input>/<output> attributes: the common ones, then those of each back-end
_STREAM = {"mixingEngine": ("mixing-engine", bool), "fixedSettings": ("fixed-settings", bool),
           "voices": ("voices", int), "bufferLength": ("buffer-length", int)}
_STREAM_BY_TYPE = {
    "alsa": {"dev": ("dev", str)},
    "oss": {"dev": ("dev", str), "bufferCount": ("buffer-count", int), "tryPoll": ("try-poll", bool)},
    "coreaudio": {"bufferCount": ("buffer-count", int)},
    "sdl": {"bufferCount": ("buffer-count", int)},
    "jack": {"serverName": ("server-name", str), "clientName": ("client-name", str),
             "connectPorts": ("connect-ports", str), "exactName": ("exact-name", bool)},
    "pulseaudio": {"name": ("name", str), "streamName": ("stream-name", str), "latency": ("latency", int)},
    "pipewire": {"name": ("name", str), "streamName": ("stream-name", str), "latency": ("latency", int)},
}


def _value(text: str, kind: type) -> Any:
    if kind is bool:
        return text == "yes"
    return int(text) if kind is int else text


def _stream(audio_type: str, el: Any) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for xml, (name, kind) in _STREAM.items():
        if el.get(xml) is not None:
            props[name] = _value(el.get(xml), kind)
    settings = next((c for c in el if c.tag == "settings"), None)
    if settings is not None:
        for key, kind in (("frequency", int), ("channels", int), ("format", str)):
            if settings.get(key) is not None:
                props[key] = _value(settings.get(key), kind)
    for xml, (name, kind) in _STREAM_BY_TYPE.get(audio_type, {}).items():
        if el.get(xml) is not None:
            props[name] = _value(el.get(xml), kind)
    return props


def audiodev_props(audio: Any) -> dict[str, Any]:
    """One <audio> as -audiodev (qemuBuildAudioCommandLineArg)."""
    props: dict[str, Any] = {"id": f"audio{audio.id}", "driver": _DRIVERS.get(audio.type, audio.type)}
    for xml in ("timerPeriod", *_TOP_BY_TYPE.get(audio.type, ())):
        if audio.attrs.get(xml) is not None:
            name, kind = _TOP[xml]
            props[name] = _value(audio.attrs[xml], kind)
    for tag, key in (("input", "in"), ("output", "out")):
        el = next((c for c in audio.children if getattr(c, "tag", None) == tag), None)
        if el is not None and (stream := _stream(audio.type, el)):
            props[key] = stream
    return props


def _json(props: dict[str, Any]) -> str:
    return compact_json(props)


def sounds(ctx: Ctx) -> None:
    for snd in ctx.domain.devices.sounds:
        if snd.model == "pcspk":
            continue  # a -machine option (pcspk-audiodev)
        driver = _SOUND.get(snd.model)
        if driver is None:
            raise DomainInvalid(f"unknown sound model {snd.model!r}", path=ctx.domain.source, line=snd.line)
        alias = ctx.alias(snd)
        if snd.model == "virtio":  # virtio-sound, on PCI or (boards without PCI) on virtio-mmio
            addr = ctx.address(snd)
            driver = "virtio-sound-pci" if addr is not None and addr.type == "pci" else "virtio-sound-device"
        props: dict[str, Any] = {"driver": driver, "id": alias}
        if snd.model in ("ac97", "es1370", "sb16", "usb", "virtio"):
            props["audiodev"] = f"audio{snd.audio_id or ctx.audio_id}"
        if snd.model == "virtio":
            props["streams"] = int(snd.attrs.get("streams", "2"))
        if snd.model == "usb" and snd.attrs.get("multichannel") == "yes":
            props["multi"] = True
        props.update(ctx.address_props(snd))
        ctx.device(props, virtio=snd if snd.model == "virtio" else None)
        if driver.endswith("intel-hda"):
            codecs = snd.codecs or ["duplex"]
            for n, codec in enumerate(codecs):
                ctx.device({"driver": f"hda-{codec}", "id": f"{alias}-codec{n}", "bus": f"{alias}.0", "cad": n,
                            "audiodev": f"audio{snd.audio_id or ctx.audio_id}"})
