"""Domain + Capabilities -> QEMU argv, in libvirt's option order (qemuBuildCommandLine)."""

from __future__ import annotations

from collections.abc import Callable

from conformance.argv import audio, chardev, controllers, defaults, disk, graphics, hostdev, input, machine, misc, net
from conformance.argv import video as video_
from conformance.argv.ccw import assign_ccw_addresses
from conformance.argv.context import Ctx
from conformance.argv.device_types import check_device_types
from conformance.argv.firmware import resolve_firmware
from conformance.argv.layout_memo import LAYOUTS
from conformance.argv.pci import assign_pci_addresses
from conformance.argv.schema_coverage import check_domain
from conformance.caps.model import Capabilities
from conformance.domain.model import Domain
from conformance.errors import UnsupportedByQemu


def resolve_machine(domain: Domain, caps: Capabilities) -> tuple[str, object]:
    """The machine type libvirt runs: the XML's (aliases resolved to the canonical name) or the default."""
    name = domain.os.machine
    if not name:
        default = caps.default_machine()
        if default is None:
            raise UnsupportedByQemu("the domain names no machine type and these capabilities have no default",
                                    path=domain.source, hint="add <type machine='q35'> to <os>")
        return default.name, default
    found = caps.machine(name)
    if found is None:
        return name, None
    return found.name, found


def new_context(domain: Domain, caps: Capabilities) -> Ctx:
    arch = domain.os.arch or caps.arch
    # i686 guests run on qemu-system-x86_64, armv7l guests on qemu-system-aarch64 (virQEMUCapsFindTarget)
    if arch != caps.arch and (arch, caps.arch) not in (("i686", "x86_64"), ("armv7l", "aarch64")):
        raise UnsupportedByQemu(f"the domain is for {arch} but the capabilities are of a {caps.arch} QEMU",
                                path=domain.source, hint="pick capabilities of the same architecture")
    name, found = resolve_machine(domain, caps)
    return Ctx(domain=domain, caps=caps, arch=arch, machine_name=name, machine=found)  # type: ignore[arg-type]


def _firmware(ctx: Ctx) -> None:
    firmware = resolve_firmware(ctx)
    ctx.pflash, ctx.bios = (None, firmware) if isinstance(firmware, str) else (firmware, None)


# the steps after the layout, in libvirt's option order (qemuBuildCommandLine); each takes the build context
_STEPS: tuple[Callable[[Ctx], None], ...] = (
    misc.device_overrides,
    misc.compat_deprecated,
    machine.pflash,
    machine.machine,
    machine.cpu,
    machine.loader_globals,
    machine.memory,
    machine.smp,
    machine.iothreads,
    machine.throttle_groups,
    machine.numa,
    machine.clock_and_pm,
    machine.boot,
    misc.iommu,
    controllers.controllers,
    misc.memory_devices,
    misc.hubs,
    controllers.ccid_controllers,
    disk.disks,
    disk.filesystems,
    net.interfaces,
    chardev.smartcards,
    chardev.serials,
    chardev.parallels,
    chardev.channels,
    chardev.consoles,
    misc.tpms,
    input.inputs,
    audio.audiodevs,
    graphics.graphics,
    video_.videos,
    audio.sounds,
    misc.watchdogs,
    chardev.redirdevs,
    hostdev.hostdevs,
    machine.incoming,
    misc.memballoon,
    misc.rngs,
    misc.vmcoreinfo,
    misc.launch_security,
    # qemuBuildCommandLine: the <qemu:commandline> args come before -sandbox and the devices after it
    misc.qemu_commandline,
    misc.panics,
    misc.shmems,
    misc.vsocks,
    misc.cryptos,
    misc.pstores,
    misc.async_teardown,  # qemuBuildAsyncTeardownCommandLine: the last option
)


_DEVICES = _STEPS.index(misc.iommu)  # from here on the steps read no versioned name (argv/layout_memo.py)


def _devices(ctx: Ctx) -> None:
    """The device steps, kept as one by the static stages' memo."""
    for step in _STEPS[_DEVICES:]:
        step(ctx)


def build_argv(domain: Domain, caps: Capabilities) -> list[str]:
    """The QEMU command line libvirt would build for this domain on a QEMU with these capabilities.

    Pure: reads the domain and caps, mutates neither, does no I/O. A domain that uses a schema item
    the builder does not support (schema_classes.toml, class d) is refused, never built without it.
    """
    check_domain(domain.xml, domain.source)
    ctx = new_context(domain, misc.namespace_capabilities(domain, caps))
    memo = LAYOUTS.get()  # the static stages reuse a domain's layout across fixtures (argv/layout_memo.py)
    if memo is None:
        defaults.prepare(ctx)
        _firmware(ctx)
        assign_pci_addresses(ctx)
    else:
        memo.lay_out(ctx, defaults.prepare, _firmware, assign_pci_addresses)
    assign_ccw_addresses(ctx)
    ctx.add(domain.devices.emulator or f"/usr/bin/qemu-system-{ctx.arch}")
    if memo is None:
        for step in _STEPS:
            step(ctx)
    else:  # the device steps reused across fixtures that answer them the same way (argv/layout_memo.py)
        for step in _STEPS[:_DEVICES]:
            step(ctx)
        memo.step(ctx, _devices)
    check_device_types(ctx.argv, domain, caps)
    return ctx.argv
