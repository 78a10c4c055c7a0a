"""Small device families: watchdog, memballoon, RNG, panic, IOMMU, TPM, memory devices, launch security."""

from __future__ import annotations

import copy
from typing import Any

from conformance.argv.chardev import chardev_backend
from conformance.argv.context import Ctx, to_json
from conformance.argv.harness import (
    HARNESS_VSOCK_CID,
    SWTPM_SOCKET,
    TPM_CANCEL_FD,
    TPM_FD,
    VSOCK_FD,
    domain_dir,
)
from conformance.argv.memory import backend_objects, memory_device_prealloc
from conformance.argv.options import escape_opt_value
from conformance.caps.model import Capabilities
from conformance.domain.model import Domain
from conformance.domain.parse import _Ctx
from conformance.errors import DomainInvalid, UnsupportedByQemu


def watchdogs(ctx: Ctx) -> None:
    action = None
    for wd in ctx.watchdogs:
        if wd.model == "itco":
            ctx.add("-global", "ICH9-LPC.noreboot=off")
        elif wd.model in ("i6300esb", "ib700", "diag288"):
            ctx.device({"driver": wd.model, "id": ctx.alias(wd), **ctx.address_props(wd)})
        else:
            raise DomainInvalid(f"unknown watchdog model {wd.model!r}", path=ctx.domain.source, line=wd.line)
        action = action or wd.action or "reset"
    if action is not None:
        ctx.add("-watchdog-action", {"dump": "pause"}.get(action, action))


def memballoon(ctx: Ctx) -> None:
    mb = ctx.memballoon
    if mb is None or mb.model == "none":
        return
    if not mb.model.startswith("virtio"):
        raise DomainInvalid(f"unknown memballoon model {mb.model!r}", path=ctx.domain.source, line=mb.line)
    addr = ctx.address(mb)
    driver = "virtio-balloon-ccw" if addr is not None and addr.type == "ccw" else "virtio-balloon-pci"
    props: dict[str, Any] = {"driver": driver, "id": ctx.alias(mb), **ctx.address_props(mb)}
    if mb.attrs.get("autodeflate"):
        props["deflate-on-oom"] = mb.attrs["autodeflate"] == "on"
    if mb.attrs.get("freePageReporting"):
        props["free-page-reporting"] = mb.attrs["freePageReporting"] == "on"
    ctx.device(props, virtio=mb)


def rngs(ctx: Ctx) -> None:
    for rng in ctx.domain.devices.rngs:
        alias = ctx.alias(rng)
        obj = f"obj{alias}"
        if rng.backend_model == "random":
            ctx.object({"qom-type": "rng-random", "id": obj, "filename": rng.backend_path or "/dev/random"})
        elif rng.backend_model == "builtin":
            ctx.object({"qom-type": "rng-builtin", "id": obj})
        elif rng.backend_model == "egd" and rng.egd is not None:
            chardev_backend(ctx, rng.egd, f"char{alias}")
            ctx.object({"qom-type": "rng-egd", "id": obj, "chardev": f"char{alias}"})
        else:
            raise DomainInvalid(f"unknown rng backend {rng.backend_model!r}", path=ctx.domain.source, line=rng.line)
        addr = ctx.address(rng)
        driver = "virtio-rng-ccw" if addr is not None and addr.type == "ccw" else "virtio-rng-pci"
        props: dict[str, Any] = {"driver": driver, "rng": obj, "id": alias}
        if rng.rate.get("bytes"):
            props["max-bytes"] = int(rng.rate["bytes"])
            props["period"] = int(rng.rate.get("period", 1000))
        props.update(ctx.address_props(rng))
        ctx.device(props, virtio=rng)


def panics(ctx: Ctx) -> None:
    for panic in ctx.domain.devices.panics:
        model = panic.model or ("isa" if ctx.is_x86 else "s390" if ctx.is_s390 else "pvpanic")
        if model == "isa":
            props: dict[str, Any] = {"driver": "pvpanic"}
            addr = ctx.address(panic)
            if addr is not None and "iobase" in addr.extra:
                props["ioport"] = int(addr.extra["iobase"], 0)
            ctx.device(props)
        elif model == "pvpanic":
            addr = ctx.address(panic)
            if addr is None or addr.type != "pci":  # checked after address assignment (qemuValidateDomainDefPanic)
                raise UnsupportedByQemu("<panic>: unsupported configuration: pvpanic is supported only with PCI "
                                        "address type", path=ctx.domain.source, line=panic.line)
            ctx.device({"driver": "pvpanic-pci", "id": ctx.alias(panic), **ctx.address_props(panic)})
        elif model in ("hyperv", "s390"):
            continue
        else:
            raise DomainInvalid(f"unknown panic model {model!r}", path=ctx.domain.source, line=panic.line)


def intel_iommu_driver(ctx: Ctx) -> dict[str, str]:
    """The Intel IOMMU's <driver>, with what libvirt turns on by itself: more than 255 vCPUs need x2APIC
    interrupt remapping (intremap and eim on)."""
    dev = ctx.iommu
    drv = dict(dev.driver) if dev is not None else {}
    if ctx.domain.vcpus > 255:
        drv.setdefault("intremap", "on")
        drv.setdefault("eim", "on")
    return drv


def iommu(ctx: Ctx) -> None:
    dev = ctx.iommu
    if dev is None:
        return
    if dev.model == "virtio":
        ctx.device({"driver": "virtio-iommu", "id": ctx.alias(dev), **ctx.address_props(dev)})
    elif dev.model == "intel":
        props: dict[str, Any] = {"driver": "intel-iommu", "id": ctx.alias(dev)}
        drv = intel_iommu_driver(ctx)
        if drv.get("intremap"):
            props["intremap"] = drv["intremap"]
        if drv.get("caching_mode"):
            props["caching-mode"] = drv["caching_mode"] == "on"
        if drv.get("eim"):
            props["eim"] = drv["eim"]
        if drv.get("iotlb"):
            props["device-iotlb"] = drv["iotlb"] == "on"
        if drv.get("aw_bits"):
            props["aw-bits"] = int(drv["aw_bits"])
        if drv.get("dma_translation") in ("on", "off"):
            props["dma-translation"] = drv["dma_translation"] == "on"
        ctx.device(props)
    elif dev.model == "smmuv3":
        return  # a machine option on ARM virt
    else:
        raise DomainInvalid(f"unknown iommu model {dev.model!r}", path=ctx.domain.source, line=dev.line)


def tpms(ctx: Ctx) -> None:
    for tpm in ctx.domain.devices.tpms:
        alias = ctx.alias(tpm)
        model = tpm.model or "tpm-tis"  # libvirt's default on x86
        if tpm.backend_type == "passthrough" and ctx.modern_libvirt:
            # libvirt opens the TPM and its sysfs cancel file itself and passes both in fd sets
            tpm_set = ctx.pass_fd(f"{alias}-tpm", TPM_FD)
            cancel_set = ctx.pass_fd(f"{alias}-cancel", TPM_CANCEL_FD)
            ctx.add("-tpmdev", f"passthrough,id=tpm-{alias},path=/dev/fdset/{tpm_set},"
                               f"cancel-path=/dev/fdset/{cancel_set}")
        elif tpm.backend_type == "passthrough":
            path = tpm.backend_source.get("path", "/dev/tpm0")
            ctx.add("-tpmdev", f"passthrough,id=tpm-{alias},path={escape_opt_value(path)}")
        elif tpm.backend_type in ("emulator", "external"):
            path = SWTPM_SOCKET if tpm.backend_type == "emulator" else tpm.backend_source.get("path", "")
            ctx.add("-chardev", f"socket,id=chrtpm,path={escape_opt_value(path)}")
            ctx.add("-tpmdev", f"emulator,id=tpm-{alias},chardev=chrtpm")
        else:
            raise DomainInvalid(f"unknown TPM backend {tpm.backend_type!r}", path=ctx.domain.source, line=tpm.line)
        driver = {"tpm-tis": "tpm-tis", "tpm-crb": "tpm-crb", "tpm-spapr": "tpm-spapr"}.get(model)
        if driver is None:
            raise DomainInvalid(f"unknown TPM model {model!r}", path=ctx.domain.source, line=tpm.line)
        ctx.device({"driver": driver, "tpmdev": f"tpm-{alias}", "id": alias})


QEMU_NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"


# <qemu:deprecation behavior=...> -> -compat's policies (qemuBuildCompatDeprecatedCommandLine)
# qemuBuildCompatDeprecatedCommandLine: output is always hidden, input rejected/crashing per behavior
_DEPRECATION = {"omit": {"deprecated-output": "hide"},
                "reject": {"deprecated-output": "hide", "deprecated-input": "reject"},
                "crash": {"deprecated-output": "hide", "deprecated-input": "crash"}}


def compat_deprecated(ctx: Ctx) -> None:
    """-compat for <qemu:deprecation behavior='omit|reject|crash'> (none: QEMU's defaults, no option)."""
    el = next((e for e in ctx.domain.extra if getattr(e, "tag", None) == f"{QEMU_NS}deprecation"), None)
    policy = _DEPRECATION.get(el.get("behavior", "") if el is not None else "")
    if policy:
        ctx.add("-compat", to_json(policy))


def device_overrides(ctx: Ctx) -> None:
    """Collect <qemu:override><qemu:device alias=...><qemu:frontend> properties for ctx.device."""
    for el in ctx.domain.extra:
        if getattr(el, "tag", None) != f"{QEMU_NS}override":
            continue
        for dev in (d for d in el if d.tag == f"{QEMU_NS}device" and d.get("alias")):
            for front in (f for f in dev if f.tag == f"{QEMU_NS}frontend"):
                ctx.device_overrides.setdefault(dev.get("alias"), []).extend(
                    (p.get("name", ""), p.get("type", "string"), p.get("value", ""))
                    for p in front if p.tag == f"{QEMU_NS}property")


def qemu_commandline(ctx: Ctx) -> None:
    """<qemu:commandline><qemu:arg value=.../>: passed through, last, as libvirt does."""
    for el in ctx.domain.extra:
        if getattr(el, "tag", None) == f"{QEMU_NS}commandline":
            ctx.add(*(arg.get("value", "") for arg in el if arg.tag == f"{QEMU_NS}arg"))


def vsocks(ctx: Ctx) -> None:
    """<vsock>: vhost-vsock with its guest CID (an automatic one: the harness's) on a pre-opened vhost fd."""
    for dev, el in ctx.vsocks:
        cid = next((c for c in el if c.tag == "cid"), None)
        auto = cid is None or cid.get("auto") == "yes" or not cid.get("address")
        guest_cid = HARNESS_VSOCK_CID if auto else int(cid.get("address"))
        model = el.get("model", "")
        suffix = f"-{model.removeprefix('virtio-')}" if model in ("virtio-transitional", "virtio-non-transitional") \
            else ""
        ctx.device({"driver": f"vhost-vsock-pci{suffix}", "id": ctx.alias(dev), "guest-cid": guest_cid,
                    "vhostfd": str(VSOCK_FD), **ctx.address_props(dev)}, virtio=dev)


def cryptos(ctx: Ctx) -> None:
    """<crypto model='virtio'>: its back-end object objALIAS (builtin or lkcf) and virtio-crypto on it
    (qemuBuildCryptoCommandLine, qemuBuildCryptoBackendProps)."""
    for dev, el in ctx.cryptos:
        backend = next((c for c in el if c.tag == "backend"), None)
        model = backend.get("model", "builtin") if backend is not None else "builtin"
        alias = ctx.alias(dev)
        props: dict[str, Any] = {"qom-type": f"cryptodev-backend-{model}", "id": f"obj{alias}"}
        queues = int(backend.get("queues") or 0) if backend is not None else 0
        if queues > 0:
            props["queues"] = queues
        ctx.object(props)
        ctx.device({"driver": "virtio-crypto-pci", "cryptodev": f"obj{alias}", "id": alias,
                    **ctx.address_props(dev)}, virtio=dev)


def pstores(ctx: Ctx) -> None:
    """<pstore backend='acpi-erst'>: a shared file back-end memALIAS of the given size and the acpi-erst device
    on it (qemuBuildPstoreCommandLine)."""
    for dev, el in ctx.pstores:
        alias = ctx.alias(dev)
        path = next((c.text or "" for c in el if c.tag == "path"), "")
        size = next((c for c in el if c.tag == "size"), None)
        kib = _Ctx(ctx.domain.source).size_kib(size) if size is not None else 0  # libvirt keeps KiB
        ctx.object({"qom-type": "memory-backend-file", "id": f"mem{alias}", "mem-path": path, "size": kib * 1024,
                    "share": True})
        ctx.device({"driver": "acpi-erst", "id": alias, "memdev": f"mem{alias}", **ctx.address_props(dev)})


SHMEM_DEFAULT_BYTES = 4 << 20  # a <shmem> without <size> (virDomainShmemDefParseXML)


def shmems(ctx: Ctx) -> None:
    """<shmem>: an ivshmem-plain on a shared /dev/shm/NAME file back-end shmmem-ALIAS, or an ivshmem-doorbell
    on the server's UNIX socket chardev (default /var/lib/libvirt/shmem-NAME-sock) with its MSI vectors and
    ioeventfd (on unless <msi ioeventfd='off'>); role master/peer is 'master' on/off
    (qemuBuildShmemCommandLine, qemuBuildShmemDevProps, qemuBuildShmemBackendMemProps)."""
    for dev, el in ctx.shmems:
        alias = ctx.alias(dev)
        name = el.get("name", "")
        model = next((c.get("type") for c in el if c.tag == "model"), None) or "ivshmem-plain"
        props: dict[str, Any] = {"driver": model, "id": alias}
        if model == "ivshmem-plain":
            size = next((c for c in el if c.tag == "size"), None)
            nbytes = _Ctx(ctx.domain.source).size_kib(size) * 1024 if size is not None else SHMEM_DEFAULT_BYTES
            ctx.object({"qom-type": "memory-backend-file", "id": f"shmmem-{alias}", "mem-path": f"/dev/shm/{name}",
                        "size": nbytes, "share": True})
            props["memdev"] = f"shmmem-{alias}"
        elif model == "ivshmem-doorbell":
            props["chardev"] = f"char{alias}"
            msi = next((c for c in el if c.tag == "msi"), None)
            if msi is not None and msi.get("vectors"):
                props["vectors"] = int(msi.get("vectors"))
            props["ioeventfd"] = msi is None or msi.get("ioeventfd") != "off"
        else:
            raise UnsupportedByQemu(f"<shmem> model '{model}' is not supported by the argv builder",
                                    path=ctx.domain.source, line=dev.line)
        if el.get("role") in ("master", "peer"):
            props["master"] = "on" if el.get("role") == "master" else "off"
        ctx.device({**props, **ctx.address_props(dev)})
        if model == "ivshmem-doorbell":
            server = next((c for c in el if c.tag == "server"), None)
            path = (server.get("path") if server is not None else None) or f"/var/lib/libvirt/shmem-{name}-sock"
            ctx.add("-chardev", f"socket,id=char{alias},path={escape_opt_value(path)}")


def vmcoreinfo(ctx: Ctx) -> None:
    feat = ctx.domain.features.get("vmcoreinfo")
    if feat is not None and feat.attrs.get("state", "on") == "on":
        ctx.device({"driver": "vmcoreinfo"})


def hubs(ctx: Ctx) -> None:
    for hub in ctx.hubs:
        ctx.device({"driver": "usb-hub", "id": ctx.alias(hub), **ctx.address_props(hub)})


def memory_device_kib(ctx: Ctx, kib: int) -> int:
    """libvirt rounds hotpluggable memory up to 2 MiB on x86 (256 MiB on ppc64), 1 MiB elsewhere."""
    step = 2048 if ctx.is_x86 else 262144 if ctx.arch.startswith("ppc64") else 1024
    return -(-kib // step) * step


def memory_devices(ctx: Ctx) -> None:
    """-object memory back-end + -device per <memory> (qemuBuildMemoryDimmBackendStr,
    qemuBuildMemoryDeviceProps)."""
    for mem in ctx.domain.devices.memories:
        alias = ctx.alias(mem)
        size = memory_device_kib(ctx, mem.target_size_kib or 0) * 1024
        backend = f"mem{alias}"
        if mem.model not in ("nvdimm", "virtio-pmem", "dimm", "virtio-mem"):
            raise UnsupportedByQemu(f"memory device model {mem.model!r} is not supported by the argv builder",
                                    path=ctx.domain.source, line=mem.line)
        access = "shared" if mem.model == "virtio-pmem" else None  # virtio-pmem: shared unless told
        for obj in backend_objects(ctx, backend, size, node=mem.target_node, mem=mem, access=access,
                                   path_name=alias):
            ctx.object(obj)
        if mem.model in ("virtio-pmem", "virtio-mem"):
            dev: dict[str, Any] = {"driver": f"{mem.model}-pci"}
            if mem.model == "virtio-mem":
                dev["node"] = mem.target_node
                dev["block-size"] = (mem.target_block_kib or 0) * 1024 or None
                dev["requested-size"] = (mem.target_requested_kib or 0) * 1024 or None
            dev["memdev"] = backend
            if mem.model == "virtio-mem" and ctx.caps.has("virtio-mem-pci.prealloc") and \
                    memory_device_prealloc(ctx, mem):  # the device preallocates, not its back-end
                dev["prealloc"] = True
            dev["memaddr"] = mem.target_base or None
            if mem.target_attrs.get("dynamicMemslots") in ("yes", "no"):
                dev["dynamic-memslots"] = mem.target_attrs["dynamicMemslots"] == "yes"
            dev.update({"id": alias, **ctx.address_props(mem)})
            ctx.device(dev)
            continue
        dev = {"driver": mem.model if mem.model == "nvdimm" else "pc-dimm"}
        if mem.target_node is not None:
            dev["node"] = mem.target_node
        if mem.model == "nvdimm" and mem.target_label_kib:
            dev["label-size"] = mem.target_label_kib * 1024
        if mem.model == "nvdimm" and mem.target_readonly:
            dev["unarmed"] = True
        dev["memdev"] = backend
        dev["id"] = alias
        addr = mem.address
        dev["slot"] = ctx.mem_slots.get(id(mem))
        if addr is not None and addr.type == "dimm" and addr.extra.get("base"):
            dev["addr"] = int(addr.extra["base"], 0)
        ctx.device(dev)


def _sev_platform(ctx: Ctx, values: dict[str, str]) -> tuple[int, int]:
    """(cbitpos, reduced-phys-bits): the domain's, else the QEMU's SEV capabilities (as libvirt fills them)."""
    sev = ctx.caps.sev
    if sev is None and ("cbitpos" not in values or "reducedPhysBits" not in values):
        raise UnsupportedByQemu("<launchSecurity type='sev'> without cbitpos/reducedPhysBits needs the SEV "
                                f"platform info of the QEMU, which these capabilities ({ctx.caps.label}) lack",
                                path=ctx.domain.source,
                                hint="give <cbitpos> and <reducedPhysBits>, or probe/import on an SEV host")
    cbitpos = int(values["cbitpos"]) if "cbitpos" in values else sev.cbitpos  # type: ignore[union-attr]
    reduced = int(values["reducedPhysBits"]) if "reducedPhysBits" in values \
        else sev.reduced_phys_bits  # type: ignore[union-attr]
    return cbitpos, reduced


def launch_security(ctx: Ctx) -> None:
    ls = ctx.domain.launch_security
    if ls is None:
        return
    if ls.type not in ("sev", "sev-snp"):
        raise UnsupportedByQemu(f"<launchSecurity type='{ls.type}'> is not supported by the argv builder",
                                path=ctx.domain.source)
    v = ls.values
    cbitpos, reduced = _sev_platform(ctx, v)
    if ls.type == "sev-snp":  # qemuBuildSEVSNPCommandLine
        snp: dict[str, Any] = {"qom-type": "sev-snp-guest", "id": "lsec0", "cbitpos": cbitpos,
                               "reduced-phys-bits": reduced}
        if ls.attrs.get("kernelHashes") in ("yes", "no"):
            snp["kernel-hashes"] = ls.attrs["kernelHashes"] == "yes"
        snp["policy"] = int(v.get("policy", "0x30000"), 0)
        for element, prop in (("guestVisibleWorkarounds", "guest-visible-workarounds"), ("idBlock", "id-block"),
                              ("idAuth", "id-auth"), ("hostData", "host-data")):
            if v.get(element):
                snp[prop] = v[element]
        if ls.attrs.get("authorKey") in ("yes", "no"):
            snp["author-key-enabled"] = ls.attrs["authorKey"] == "yes"
        if ls.attrs.get("vcek") in ("yes", "no"):  # QEMU's property is the inverse
            snp["vcek-disabled"] = ls.attrs["vcek"] == "no"
        ctx.object(snp)
        return
    props: dict[str, Any] = {"qom-type": "sev-guest", "id": "lsec0", "cbitpos": cbitpos,
                             "reduced-phys-bits": reduced, "policy": int(v.get("policy", "0x0"), 0)}
    home = domain_dir(ctx.domain.name, ctx.modern_libvirt)
    if v.get("dhCert"):
        props["dh-cert-file"] = f"{home}/dh_cert.base64"
    if v.get("session"):
        props["session-file"] = f"{home}/session.base64"
    if ls.attrs.get("kernelHashes") in ("yes", "no"):
        props["kernel-hashes"] = ls.attrs["kernelHashes"] == "yes"
    ctx.object(props)


def async_teardown(ctx: Ctx) -> None:
    """<features><async-teardown enabled='yes|no'/>: -run-with async-teardown=on|off where QEMU has it
    (qemuBuildAsyncTeardownCommandLine); asking for it from a QEMU without it is refused (libvirt's feature
    validation)."""
    feature = ctx.domain.features.get("async-teardown")
    enabled = feature.attrs.get("enabled") if feature is not None else None
    if enabled not in ("yes", "no"):
        return
    if not ctx.caps.has("run-with.async-teardown"):
        if enabled == "yes":
            raise UnsupportedByQemu("<async-teardown>: unsupported configuration: asynchronous teardown is not "
                                    "available with this QEMU binary", path=ctx.domain.source,
                                    hint="needs QEMU 8.1+ (-run-with async-teardown)")
        return
    ctx.add("-run-with", f"async-teardown={'on' if enabled == 'yes' else 'off'}")


def namespace_capabilities(domain: Domain, caps: Capabilities) -> Capabilities:
    """<qemu:capabilities><qemu:add capability=X/><qemu:del capability=Y/>: the domain's own edits of the
    capability flags, applied before anything is built (qemuDomainDefNamespaceParseCaps, then
    qemuProcessPrepareQEMUCaps). The fixture itself is left alone: the argv is built on a copy."""
    el = next((e for e in domain.extra if getattr(e, "tag", None) == f"{QEMU_NS}capabilities"), None)
    if el is None:
        return caps
    add = {c.get("capability", "") for c in el if c.tag == f"{QEMU_NS}add"}
    remove = {c.get("capability", "") for c in el if c.tag == f"{QEMU_NS}del"}
    edited = copy.copy(caps)
    edited.__dict__.pop("_derived", None)  # facts derived from the unedited flags stay with the fixture
    edited.__dict__["flags"] = (caps.flags | add) - remove
    return edited
