"""Every -device an argv names must be a device type of this QEMU.

Only probed capabilities list all of a binary's types (an import from libvirt's caps XML knows
only the types libvirt has flags for), so the check runs on probed fixtures. A miss names the
domain element that asked for the device (by its model) and its line.

QEMU also takes a few other names for a type (qdev-monitor.c's alias table), and libvirt writes some
of them (`lsi` for an lsilogic controller, `ahci` for a SATA one): ``qom_type`` resolves them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from conformance.argv.controllers import SCSI_DRIVERS
from conformance.argv.options import options, parse_props
from conformance.caps.model import Capabilities
from conformance.domain.model import Domain
from conformance.errors import UnsupportedByQemu

# QEMU's alias -> type names for x86_64 and aarch64 (facts of qdev-monitor.c's qdev_alias_table); the
# virtio aliases ("virtio-net" for "virtio-net-pci") follow one rule on these arches: see qom_type.
DEVICE_ALIASES = {"ac97": "AC97", "e1000-82540em": "e1000", "es1370": "ES1370", "ahci": "ich9-ahci",
                  "lsi": "lsi53c895a"}


def qom_type(driver: str, types: set[str] | frozenset[str]) -> str | None:
    """The QOM type QEMU creates for ``-device driver``, or None when it has none. PCI is the default
    virtio transport on x86_64 and aarch64, so a bare ``virtio-X`` names ``virtio-X-pci``."""
    if driver in types:
        return driver
    target = DEVICE_ALIASES.get(driver) or (f"{driver}-pci" if driver.startswith("virtio-") else None)
    return target if target in types else None


@lru_cache(maxsize=4096)
def _driver(value: str) -> str:
    """The driver of one -device value: a function of the string, kept (the static matrix builds the same
    -device strings on many fixtures)."""
    return str(parse_props(value).get("driver", ""))


def check_device_types(argv: list[str], domain: Domain, caps: Capabilities) -> None:
    if caps.provenance.source != "probe":
        return
    for _, opt, value in options(argv):
        if opt != "-device" or not value:
            continue
        driver = _driver(value)
        if driver and qom_type(driver, caps.qom_types) is None:
            element = next((d for d in domain.all_devices() if _writes(d, driver)), None)
            tag = type(element).__name__.lower() if element is not None else "device"
            model = getattr(element, "model", None) or driver
            written = f" (written -device {driver})" if model != driver else ""
            raise UnsupportedByQemu(
                f"<{tag}> model '{model}'{written}: QEMU {caps.version} {caps.arch} has no device type '{driver}'",
                path=domain.source, line=getattr(element, "line", None),
                hint=f"use a model this QEMU has (`qemu-conformance caps show {caps.version}:{caps.arch}`)")



def _writes(element: Any, driver: str) -> bool:
    """Whether ``element`` is the one libvirt writes as ``-device driver``: by its model, or for a SCSI
    controller by libvirt's driver name for its model (a dc390 controller is ``-device dc-390``)."""
    model = getattr(element, "model", None)
    return model == driver or (getattr(element, "type", None) == "scsi" and SCSI_DRIVERS.get(model or "") == driver)
