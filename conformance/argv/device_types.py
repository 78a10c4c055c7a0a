"""Every -device an argv names must be a device type of this QEMU.

Only probed capabilities list all of a binary's types (an import from libvirt's caps XML knows
only the types libvirt has flags for), so the check runs on probed fixtures. A miss names the
domain element that asked for the device (by its model) and its line.
"""

from __future__ import annotations

from conformance.argv.options import devices
from conformance.caps.model import Capabilities
from conformance.domain.model import Domain
from conformance.errors import UnsupportedByQemu


def check_device_types(argv: list[str], domain: Domain, caps: Capabilities) -> None:
    if caps.provenance.source != "probe":
        return
    for device in devices(argv):
        driver = str(device.get("driver", ""))
        if driver and driver not in caps.qom_types:
            element = next((d for d in domain.all_devices() if getattr(d, "model", None) == driver), None)
            tag = type(element).__name__.lower() if element is not None else "device"
            raise UnsupportedByQemu(
                f"<{tag}> model '{driver}': QEMU {caps.version} {caps.arch} has no device type '{driver}'",
                path=domain.source, line=getattr(element, "line", None),
                hint=f"use a model this QEMU has (`qemu-conformance caps show {caps.version}:{caps.arch}`)")
