"""Video cards: VGA, cirrus, qxl, virtio-gpu/virtio-vga, bochs, ramfb."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx
from conformance.argv.harness import MONITOR_FD
from conformance.argv.pci import video_model
from conformance.errors import DomainInvalid

_PRIMARY = {"vga": "VGA", "cirrus": "cirrus-vga", "vmvga": "vmware-svga", "qxl": "qxl-vga", "virtio": "virtio-vga",
            "bochs": "bochs-display", "ramfb": "ramfb"}
_SECONDARY = {"qxl": "qxl", "virtio": "virtio-gpu-pci", "bochs": "bochs-display", "vga": "VGA"}
# libvirt's default video RAM in KiB (virDomainVideoDefaultRAM)
# (vmvga and bochs: 16 MiB, as libvirt 9.0 runs them)
_DEFAULT_VRAM = {"vga": 16384, "cirrus": 16384, "vmvga": 16384, "qxl": 65536, "bochs": 16384}


def videos(ctx: Ctx) -> None:
    for i, vid in enumerate(ctx.videos):
        model = video_model(ctx, vid)
        if model == "none":
            continue
        primary = i == 0
        table = _PRIMARY if primary else _SECONDARY
        driver = table.get(model)
        if model == "virtio" and primary and (not ctx.caps.has("virtio-vga") or ctx.is_arm_virt or ctx.is_s390):
            driver = "virtio-gpu-pci"
        if driver is None:
            raise DomainInvalid(f"unknown video model {model!r}" if model not in _PRIMARY else
                                f"video model {model!r} cannot be a secondary card", path=ctx.domain.source,
                                line=vid.line, hint="use vga, cirrus, qxl, virtio, bochs, ramfb or none")
        accel = next((c for c in vid.model_children if c.tag == "acceleration"), None)
        if model == "virtio" and accel is not None and accel.get("accel3d") == "yes" and \
                driver in ("virtio-vga", "virtio-gpu-pci") and ctx.caps.has("virtio-gpu-gl-pci"):
            driver = {"virtio-vga": "virtio-vga-gl", "virtio-gpu-pci": "virtio-gpu-gl-pci"}[driver]  # virgl
        vhost_user = model == "virtio" and vid.driver.get("name") == "vhostuser"
        if vhost_user:  # rendered by an external vhost-user-gpu process, on a socket libvirt passes as an fd
            driver = "vhost-user-vga" if driver in ("virtio-vga", "virtio-vga-gl") else "vhost-user-gpu-pci"
            ctx.add("-chardev", f"socket,id=chr-vu-{ctx.alias(vid)},fd={MONITOR_FD}")
        props: dict[str, Any] = {"driver": driver, "id": ctx.alias(vid)}
        m = vid.model_attrs
        if model in ("virtio", "qxl"):
            props["max_outputs"] = int(m.get("heads", 1))
        if model == "virtio" and m.get("blob") in ("on", "off"):
            props["blob"] = m["blob"] == "on"
        if model == "qxl":
            props["ram_size"] = int(m.get("ram", 65536)) * 1024
            props["vram_size"] = int(m.get("vram", 65536)) * 1024
            props["vram64_size_mb"] = int(m.get("vram64", 0)) // 1024
            props["vgamem_mb"] = int(m.get("vgamem", 16384)) // 1024
        elif model in ("vga", "vmvga"):
            vram = int(m.get("vram", _DEFAULT_VRAM[model]))
            props["vgamem_mb"] = vram // 1024
        if model == "bochs":
            props["vgamem"] = int(m.get("vram", _DEFAULT_VRAM[model])) * 1024
        res = next((c for c in vid.model_children if c.tag == "resolution"), None)
        if res is not None:  # <resolution x y>: the card's preferred mode (qemuBuildDeviceVideoCmd)
            props.update({k: int(res.get(a, "0")) for k, a in (("xres", "x"), ("yres", "y")) if res.get(a)})
        if vhost_user:
            props["chardev"] = f"chr-vu-{ctx.alias(vid)}"
        props.update(ctx.address_props(vid))
        # virtio transport options on the PCI GPU devices (the VGA-compatible ones do not take them)
        ctx.device(props, virtio=vid if model == "virtio" and str(props["driver"]).endswith("-pci") else None)
