"""-machine, -accel, -cpu, -m and the RAM backends, -smp, iothreads, NUMA, and the early globals."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from conformance.argv.context import Ctx
from conformance.argv.cpu_host import host_model_cpu
from conformance.argv.cpu_map import find_cpu_map, load_x86_map
from conformance.argv.cpu_x86 import LIBVIRT_TO_QEMU, from_qemu
from conformance.argv.disk import nvram_blockdev
from conformance.argv.harness import (
    HARNESS_GENERATED_UUID,
    HARNESS_NOW,
    HARNESS_UTC_OFFSET,
    HOST_CPU_EXTRA_FEATURES,
    HOST_CPU_MODEL,
    INCOMING,
)
from conformance.argv.memory import backend_objects, cell_needs_backend, check_host_nodes, legacy_memory_args
from conformance.argv.misc import intel_iommu_driver
from conformance.argv.options import compact_json, escape_opt_value
from conformance.argv.storage_source import nvram_source
from conformance.caps.model import QemuVersion
from conformance.domain.model import Cpu
from conformance.domain.rules import _bitmap
from conformance.errors import UnsupportedByQemu

_MIB = 1024


def aligned_kib(kib: int) -> int:
    """libvirt rounds guest RAM (and each NUMA cell) up to whole MiB on x86/ARM."""
    return -(-kib // _MIB) * _MIB


def pflash(ctx: Ctx) -> None:
    """-blockdev chains of pflash0 (the firmware code: always a format node) and pflash1 (its variables)."""
    fw = ctx.pflash
    if fw is None:
        return
    images = [("pflash0", fw.code, fw.code_format, fw.code_readonly, True)]
    if fw.vars:
        images.append(("pflash1", fw.vars, fw.vars_format, False, False))
    nvram = nvram_source(ctx)  # a variable store on a block device or network storage: built as a disk source
    for name, path, fmt, readonly, always_layered in images:
        storage = f"libvirt-{name}-storage"
        if name == "pflash1" and nvram is not None:
            nvram_blockdev(ctx, nvram, fmt, layered=_pflash_vars_layered(ctx, fmt))
            continue
        if not always_layered and not _pflash_vars_layered(ctx, fmt):
            ctx.blockdev_arg({"driver": "file", "filename": path, "node-name": storage, "read-only": readonly})
            continue
        ctx.blockdev_arg({"driver": "file", "filename": path, "node-name": storage, "auto-read-only": True,
                          "discard": "unmap"})
        fmt_node = {"node-name": f"libvirt-{name}-format", "read-only": readonly, "driver": fmt, "file": storage}
        if fmt == "qcow2":
            fmt_node["backing"] = None
            ctx.argv += ["-blockdev", _json_keep_null(fmt_node)]
        else:
            ctx.blockdev_arg(fmt_node)


def _pflash_vars_layered(ctx: Ctx, fmt: str) -> bool:
    """The NVRAM store follows the disk rule: raw stores lose the format node once QEMU can mask it."""
    return fmt != "raw" or not ctx.modern_libvirt or not ctx.caps.has("blockjob.backing-mask-protocol")


def pflash_node(ctx: Ctx, name: str, fmt: str, always_layered: bool) -> str:
    layered = always_layered or _pflash_vars_layered(ctx, fmt)
    return f"libvirt-{name}-{'format' if layered else 'storage'}"


def loader_globals(ctx: Ctx) -> None:
    """A ROM firmware (-bios), or firmware whose flash is writable only from SMM (<loader secure='yes'>)."""
    if ctx.bios:
        ctx.add("-bios", ctx.bios)
    if ctx.pflash is not None and ctx.pflash.secure:
        ctx.add("-global", "driver=cfi.pflash01,property=secure,value=on")


def _json_keep_null(props: dict) -> str:
    return compact_json(props)


def uses_default_ram_backend(ctx: Ctx) -> bool:
    cpu = ctx.domain.cpu
    return bool(ctx.machine and ctx.machine.default_ram_id and not (cpu and cpu.numa))


def machine(ctx: Ctx) -> None:
    d = ctx.domain
    opts = [ctx.machine_name, "usb=off"]
    feats = d.features
    vmport = feats.get("vmport")
    if vmport is not None and ctx.is_x86:
        opts.append(f"vmport={vmport.attrs.get('state', 'on')}")
    smm = feats.get("smm")
    if smm is not None and smm.attrs.get("state") == "off":
        opts.append("smm=off")
    elif (smm is not None and smm.attrs.get("state", "on") == "on") or (ctx.pflash is not None and ctx.pflash.smm):
        opts.append("smm=on")
    ioapic = feats.get("ioapic")
    driver = ioapic.attrs.get("driver") if ioapic is not None else None
    iommu = ctx.iommu
    if driver is None and iommu is not None and iommu.model == "intel" and \
            intel_iommu_driver(ctx).get("intremap") == "on":
        driver = "qemu"  # interrupt remapping needs QEMU's IOAPIC: libvirt adds <ioapic driver='qemu'/>
    if driver in ("qemu", "kvm"):
        opts.append(f"kernel_irqchip={'split' if driver == 'qemu' else 'on'}")
    if ctx.is_arm_virt:
        gic = feats.get("gic")
        version = gic.attrs.get("version") if gic is not None else None
        if not version:
            # libvirt picks what the host supports under KVM (GICv3 on current hosts), GICv2 under TCG
            version = "3" if d.type == "kvm" else "2"
        opts.append(f"gic-version={version}")
        if ctx.iommu is not None and ctx.iommu.model == "smmuv3":
            opts.append("iommu=smmuv3")
        ras = feats.get("ras")
        if ras is not None and ras.attrs.get("state") in ("on", "off"):
            opts.append(f"ras={ras.attrs['state']}")
    i8042 = feats.get("ps2")
    if i8042 is not None and "state" in i8042.attrs:
        if not ctx.caps.has("machine-i8042-opt"):
            raise UnsupportedByQemu("i8042 is not available for this QEMU binary", path=d.source,
                                    hint="needs QEMU 7.0+")
        opts.append(f"i8042={i8042.attrs['state']}")
    opts.append(f"dump-guest-core={d.memory_dump_core or 'off'}")
    mb = d.memory_backing
    if mb is not None and any(c.tag == "nosharepages" for c in mb.children):
        opts.append("mem-merge=off")
    if any(m.model == "nvdimm" for m in d.devices.memories):
        opts.append("nvdimm=on")
    if uses_default_ram_backend(ctx):
        opts.append(f"memory-backend={ctx.machine.default_ram_id}")  # type: ignore[union-attr]
    # then in qemuBuildMachineCommandLine's order: launch security, pflash, HMAT, HPET, the PC speaker
    if d.launch_security is not None:
        opts.append("confidential-guest-support=lsec0")
    fw = ctx.pflash
    if fw is not None:
        opts.append("pflash0=libvirt-pflash0-format")
        if fw.vars:
            opts.append(f"pflash1={pflash_node(ctx, 'pflash1', fw.vars_format, False)}")
    if _hmat(d):
        opts.append("hmat=on")  # NUMA caches or interconnects: the ACPI HMAT table
    hpet = _timer(ctx, "hpet")
    if hpet is not None and "present" in hpet and ctx.caps.has("machine-hpet"):
        opts.append(f"hpet={'on' if hpet['present'] == 'yes' else 'off'}")
    if any(s.model == "pcspk" for s in d.devices.sounds):  # the PC speaker is the machine's own
        pcspk = next(s for s in d.devices.sounds if s.model == "pcspk")
        opts.append(f"pcspk-audiodev=audio{pcspk.audio_id or ctx.audio_id}")
    if ctx.machine is not None and ctx.machine.acpi:  # only where the machine type has ACPI at all
        opts.append(f"acpi={'on' if 'acpi' in feats else 'off'}")
    ctx.add("-machine", ",".join(opts))
    accel = d.type if d.type in ("kvm", "hvf") else "tcg"
    kvm_feats = feats.get("kvm")
    ring = next((c for c in kvm_feats.children if c.tag == "dirty-ring" and c.get("state") == "on"),
                None) if kvm_feats is not None else None
    if accel == "kvm" and ring is not None and ring.get("size"):
        accel += f",dirty-ring-size={ring.get('size')}"
    tcg = feats.get("tcg")
    tb = next((c for c in tcg.children if c.tag == "tb-cache"), None) if tcg is not None else None
    if accel == "tcg" and tb is not None:  # the translation block cache, in MiB
        scale = {"kib": 1 / 1024, "k": 1 / 1024, "mib": 1, "m": 1, "gib": 1024, "g": 1024}
        accel += f",tb-size={int(int((tb.text or '0').strip()) * scale.get((tb.get('unit') or 'MiB').lower(), 1))}"
    ctx.add("-accel", accel)
    smm = feats.get("smm")
    tseg = next((c for c in smm.children if c.tag == "tseg"), None) if smm is not None else None
    if tseg is not None and ctx.is_q35:
        scale = {"b": 1 / (1 << 20), "kib": 1 / 1024, "k": 1 / 1024, "mib": 1, "m": 1, "gib": 1024, "g": 1024}
        mib = int(int((tseg.text or "0").strip()) * scale.get((tseg.get("unit") or "MiB").lower(), 1))
        ctx.add("-global", f"mch.extended-tseg-mbytes={mib}")


def _timer(ctx: Ctx, name: str) -> dict[str, str] | None:
    clock = ctx.domain.clock
    if clock is None:
        return None
    for t in clock.timers:
        if t.name == name:
            return t.attrs
    return None


def cpu(ctx: Ctx) -> None:
    d = ctx.domain
    c = d.cpu
    feats: list[str] = []
    if c is not None and c.mode == "host-passthrough":
        model = "host"
        if ctx.is_x86:
            feats.append(f"migratable={c.attrs.get('migratable', 'on')}")
        if ctx.arch == "armv7l" and ctx.caps.arch == "aarch64":
            feats.append("aarch64=off")  # a 32-bit guest on a 64-bit host CPU
    elif c is not None and c.mode == "maximum":
        model = "max"
    elif c is not None and c.mode == "host-model":
        model, extra = host_model_cpu(ctx)
        feats += extra
    elif c is not None and c.model:
        model = c.model
    else:
        model = default_cpu_model(ctx)
        if model is None:
            return
    canonical = ctx.is_x86 and ctx.caps.has("canonical-cpu-features")
    if c is not None and c.mode not in ("host-model",):
        if c.model_attrs.get("vendor_id"):
            feats.append(f"vendor={c.model_attrs['vendor_id']}")
        known = _qemu_known_features(ctx)
        for policy, name in [*c.features, *_removed_features(ctx, c)]:
            qemu_name = LIBVIRT_TO_QEMU.get(name, name) if canonical else name
            if policy in ("require", "force") or (policy == "optional" and _host_has(ctx, name)):
                feats.append(f"{qemu_name}=on")
            elif policy in ("disable", "forbid", "optional") and (known is None or name in known):
                feats.append(f"{qemu_name}=off")  # a feature QEMU does not know is off anyway
        if any(re.fullmatch(r"sve\d+", n) and p in ("require", "force") for p, n in c.features) and \
                not any(n == "sve" for _, n in c.features):
            feats.append("sve=on")  # SVE vector lengths imply SVE itself
    feats += _cpu_extras(ctx)
    if c is not None:  # after the timers, Hyper-V, KVM and PMU flags, whatever the CPU mode
        feats += _cache_and_phys_bits(c)
    ctx.add("-cpu", ",".join([model, *feats]))


def _removed_features(ctx: Ctx, c: Cpu) -> list[tuple[str, str]]:
    """The features libvirt's x86 CPU map marks removed='yes' from a custom model, disabled after the domain's
    own features unless listed there (virCPUUpdate with a removed-feature policy of 'disable' at start-up)."""
    if not ctx.is_x86 or c.mode not in ("custom", None) or not c.model:
        return []
    try:
        model = load_x86_map(find_cpu_map()).model_by_name.get(c.model)
    except UnsupportedByQemu:
        return []
    listed = {name for _, name in c.features}
    return [("disable", name) for name in (model.removed if model is not None else ()) if name not in listed]


def _qemu_known_features(ctx: Ctx) -> frozenset[str] | None:
    """x86: the CPU features this QEMU knows, in libvirt's names: every property of its host CPU expansion under
    the domain's accelerator (virQEMUCapsGetCPUFeatures in qemuBuildCpuModelArgStr); None when not known."""
    if not ctx.is_x86:
        return None
    accel = "kvm" if ctx.domain.type == "kvm" else "tcg"

    def known() -> frozenset[str] | None:
        host = ctx.caps.host_cpu(accel)
        if host is None or not host.properties:
            return None
        return frozenset(from_qemu(p.name) for p in host.properties)

    return ctx.caps.derived(("qemu-known-cpu-features", accel), known)


# <hyperv> children -> QEMU's hv-* name where it is not hv-TAG
_HYPERV_NAMES = {"emsr_bitmap": "hv-emsr-bitmap", "xmm_input": "hv-xmm-input", "vendor_id": "hv-vendor-id"}
_KVM_FEATURES = {"hint-dedicated": "kvm-hint-dedicated", "poll-control": "kvm-poll-control", "pv-ipi": "kvm-pv-ipi"}


def _host_has(ctx: Ctx, feature: str) -> bool:
    """An optional feature is on where the host CPU has it: the harness's host CPU, its model's features
    from libvirt's CPU map plus its extra ones (on when no CPU map is at hand)."""
    if feature in HOST_CPU_EXTRA_FEATURES:
        return True
    try:
        cpu_map = load_x86_map(find_cpu_map())
    except UnsupportedByQemu:
        return True
    model, feat = cpu_map.model_by_name.get(HOST_CPU_MODEL), cpu_map.feature_by_name.get(feature)
    if model is None or feat is None:
        return True
    return model.bits & feat.bits == feat.bits


def _cache_and_phys_bits(c) -> list[str]:
    """<cache mode=> and <maxphysaddr> (qemuBuildCpuCommandLine): the host's cache information is switched
    off only for a CPU that would pass it through (host-passthrough, maximum); an emulated physical address
    width without bits is the host's width switched off."""
    out: list[str] = []
    cache = next((e for e in c.extra if getattr(e, "tag", None) == "cache"), None)
    if cache is not None:
        mode = cache.get("mode")
        host_off = mode in ("emulate", "disable") and c.mode in ("host-passthrough", "maximum")
        if mode == "emulate":
            out.append("l3-cache=on")
        elif mode == "passthrough":
            out.append("host-cache-info=on")
        if host_off:
            out.append("host-cache-info=off")
        if mode in ("passthrough", "disable"):
            out.append("l3-cache=off")
    phys = next((e for e in c.extra if getattr(e, "tag", None) == "maxphysaddr"), None)
    if phys is not None:
        if phys.get("mode") == "emulate":
            out.append(f"phys-bits={phys.get('bits')}" if int(phys.get("bits") or 0) > 0 else "host-phys-bits=off")
        elif phys.get("mode") == "passthrough":
            out.append("host-phys-bits=on")
            if phys.get("limit"):
                out.append(f"host-phys-bits-limit={phys.get('limit')}")
    return out


def _cpu_extras(ctx: Ctx) -> list[str]:
    """What libvirt appends to -cpu after the model: timers, EOI, PV spinlocks, Hyper-V enlightenments,
    the Hyper-V crash MSRs of a hyperv panic device, KVM features, PMU (qemuBuildCpuCommandLine)."""
    d = ctx.domain
    out: list[str] = []
    for timer in d.clock.timers if d.clock else []:
        present = timer.attrs.get("present")
        if timer.name == "kvmclock" and present in ("yes", "no"):
            out.append(f"kvmclock={'on' if present == 'yes' else 'off'}")
        elif timer.name == "hypervclock" and present == "yes":
            out.append("hv-time=on")
        elif timer.name == "tsc" and int(timer.attrs.get("frequency") or 0) > 0:
            out.append(f"tsc-frequency={int(timer.attrs['frequency'])}")
        elif timer.name == "armvtimer" and timer.attrs.get("tickpolicy") in ("discard", "delay"):
            out.append(f"kvm-no-adjvtime={'on' if timer.attrs['tickpolicy'] == 'discard' else 'off'}")
    apic = d.features.get("apic")
    if apic is not None and apic.attrs.get("eoi") in ("on", "off"):
        out.append(f"kvm-pv-eoi={apic.attrs['eoi']}")
    pvspin = d.features.get("pvspinlock")
    if pvspin is not None:
        out.append(f"kvm-pv-unhalt={pvspin.attrs.get('state', 'on')}")
    hyperv = d.features.get("hyperv")
    if hyperv is not None:
        if hyperv.attrs.get("mode") == "passthrough":
            out.append("hv-passthrough=on")
        for child in hyperv.children:
            if child.get("state") != "on":
                continue
            name = _HYPERV_NAMES.get(child.tag, f"hv-{child.tag}")
            if child.tag == "spinlocks" and child.get("retries"):
                out.append(f"hv-spinlocks={int(child.get('retries')):#x}")
            elif child.tag == "vendor_id" and child.get("value"):
                out.append(f"hv-vendor-id={child.get('value')}")
            else:
                out.append(f"{name}=on")
            for sub in child:
                if sub.get("state") == "on":
                    suffix = {"extended": "ext"}.get(sub.tag, sub.tag)
                    out.append(f"{name}-{suffix}=on")
    if any(p.model == "hyperv" for p in d.devices.panics):
        out.append("hv-crash")
    kvm = d.features.get("kvm")
    if kvm is not None:
        for child in kvm.children:
            state = child.get("state")
            if child.tag == "hidden" and state == "on":
                out.append("kvm=off")
            elif child.tag in _KVM_FEATURES and state == ("off" if child.tag == "pv-ipi" else "on"):
                out.append(f"{_KVM_FEATURES[child.tag]}={state}")
    pmu = d.features.get("pmu")
    if pmu is not None and pmu.attrs.get("state") in ("on", "off"):
        out.append(f"pmu={pmu.attrs['state']}")
    return out


def default_cpu_model(ctx: Ctx) -> str | None:
    """The machine type's default CPU (libvirt sets it explicitly on x86, s390, ppc64 and for TCG)."""
    if ctx.domain.type != "qemu" and not (ctx.is_x86 or ctx.is_s390 or ctx.arch.startswith("ppc64")):
        return None
    typename = ctx.machine.default_cpu_for("kvm" if ctx.domain.type == "kvm" else "tcg") if ctx.machine else None
    if not typename:
        return None
    named = ctx.caps.cpu_model_of_type(typename)
    if named is not None:
        return named
    for suffix in (f"-{ctx.arch}-cpu", "-x86_64-cpu", "-arm-cpu", "-s390x-cpu", "-powerpc64-cpu"):
        if typename.endswith(suffix):
            return typename[: -len(suffix)]
    return typename


def _cell_kib(kib: int) -> int:
    """A NUMA cell's or maxMemory's size as libvirt passes it: aligned for a new start, as defined for an
    incoming migration (harness.INCOMING)."""
    return kib if INCOMING.get() else aligned_kib(kib)


def incoming(ctx: Ctx) -> None:
    """-incoming URI for a start that receives a migration (qemuBuildCommandLine, right before the balloon)."""
    uri = INCOMING.get()
    if uri:
        ctx.add("-incoming", uri)


def memory(ctx: Ctx) -> None:
    check_host_nodes(ctx)
    d = ctx.domain
    cells = d.cpu.numa if d.cpu else []
    if INCOMING.get():  # not aligned: the defined total (the cells' sum without <memory>), -m in 512 KiB steps
        initial = d.memory_kib or sum(c.memory_kib for c in cells)  # (qemuBuildMemCommandLine)
        total = initial if d.max_memory_kib is not None else initial & ~0x1FF
    else:
        total = initial = sum(aligned_kib(c.memory_kib) for c in cells) if cells else aligned_kib(d.memory_kib or 0)
    if ctx.modern_libvirt or d.max_memory_kib is not None:
        opt = f"size={total}k"
        if d.max_memory_kib is not None:
            if d.max_memory_slots is not None:
                opt += f",slots={d.max_memory_slots}"
            opt += f",maxmem={_cell_kib(d.max_memory_kib)}k"
    else:  # libvirt before 10: MiB, maxmem in MiB too
        opt = str(total // 1024)
        if d.max_memory_kib is not None:
            if d.max_memory_slots is not None:
                opt += f",slots={d.max_memory_slots}"
            opt += f",maxmem={aligned_kib(d.max_memory_kib) // 1024}M"
    ctx.add("-m", opt)
    if uses_default_ram_backend(ctx):
        for obj in backend_objects(ctx, ctx.machine.default_ram_id, initial * 1024, system=True):  # type: ignore[union-attr]
            ctx.object(obj)
    locked = d.memory_backing is not None and any(c.tag == "locked" for c in d.memory_backing.children)
    ctx.add("-overcommit", f"mem-lock={'on' if locked else 'off'}")


def smp(ctx: Ctx) -> None:
    d = ctx.domain
    current = d.vcpu_attrs.get("current")
    opt = str(int(current) if current else d.vcpus)
    vcpus = next((e for e in d.extra if getattr(e, "tag", None) == "vcpus"), None)
    if vcpus is not None and current:  # hotpluggable vCPUs start unplugged and are added over QMP
        opt = str(sum(1 for v in vcpus if v.tag == "vcpu" and v.get("enabled") == "yes"
                      and v.get("hotpluggable") != "yes"))
    if current and int(current) != d.vcpus:
        opt += f",maxcpus={d.vcpus}"
    topo = d.cpu.topology if d.cpu else {}
    if topo.get("sockets"):
        opt += f",sockets={topo['sockets']}"
        if ctx.caps.has("smp-dies") or ctx.json_device or "dies" in topo:
            opt += f",dies={topo.get('dies', 1)}"
        if ctx.caps.has("smp-clusters") or "clusters" in topo or ctx.caps.version >= _v(7, 0):
            opt += f",clusters={topo.get('clusters', 1)}"
        opt += f",cores={topo.get('cores', 1)},threads={topo.get('threads', 1)}"
    else:
        opt += f",sockets={d.vcpus},cores=1,threads=1"
    ctx.add("-smp", opt)


def _v(major: int, minor: int):
    return QemuVersion(major, minor)


# <throttlegroup> limits -> throttle-group 'limits' (always given) and their burst lengths (given when set)
_THROTTLE_LIMITS = (("total_bytes_sec", "bps-total"), ("read_bytes_sec", "bps-read"), ("write_bytes_sec", "bps-write"),
                    ("total_iops_sec", "iops-total"), ("read_iops_sec", "iops-read"), ("write_iops_sec", "iops-write"))


def throttle_groups(ctx: Ctx) -> None:
    """One throttle-group object throttle-NAME per <throttlegroups><throttlegroup>, after the iothreads and before
    -numa (qemuBuildThrottleGroupCommandLine, called between qemuBuildIOThreadCommandLine and qemuBuildNumaCommandLine):
    every rate and burst limit (0: unlimited) and the I/O size; burst lengths only where set."""
    groups = next((e for e in ctx.domain.extra if getattr(e, "tag", None) == "throttlegroups"), None)
    for group in (g for g in (groups if groups is not None else []) if g.tag == "throttlegroup"):
        values = {c.tag: int((c.text or "0").strip() or 0) for c in group if c.tag != "group_name"}
        # libvirt's key order: the six rates, their bursts, the burst lengths that are set, the I/O size
        limits: dict[str, int] = {key: values.get(tag, 0) for tag, key in _THROTTLE_LIMITS}
        limits.update({f"{key}-max": values.get(f"{tag}_max", 0) for tag, key in _THROTTLE_LIMITS})
        limits.update({f"{key}-max-length": values[f"{tag}_max_length"] for tag, key in _THROTTLE_LIMITS
                       if values.get(f"{tag}_max_length")})
        limits["iops-size"] = values.get("size_iops_sec", 0)
        name = next((c.text or "").strip() for c in group if c.tag == "group_name")
        ctx.object({"qom-type": "throttle-group", "id": f"throttle-{name}", "limits": limits})


def iothreads(ctx: Ctx) -> None:
    """<iothreadids> first, in their order with their thread pool and polling; then the other ids up to
    <iothreads>."""
    ids = next((e for e in ctx.domain.extra if getattr(e, "tag", None) == "iothreadids"), None)
    listed = [el for el in (ids if ids is not None else []) if el.tag == "iothread" and el.get("id")]
    for el in listed:
        props: dict = {"qom-type": "iothread", "id": f"iothread{el.get('id')}"}
        for attr, prop in (("thread_pool_min", "thread-pool-min"), ("thread_pool_max", "thread-pool-max")):
            if el.get(attr) is not None:
                props[prop] = int(el.get(attr))
        poll = next((c for c in el if c.tag == "poll"), None)
        for attr, prop in (("max", "poll-max-ns"), ("grow", "poll-grow"), ("shrink", "poll-shrink")):
            if poll is not None and poll.get(attr) is not None:
                props[prop] = int(poll.get(attr))
        ctx.object(props)
    default = next((e for e in ctx.domain.extra if getattr(e, "tag", None) == "defaultiothread"), None)
    taken = {int(el.get("id")) for el in listed}
    for i in range(1, max([ctx.domain.iothreads or 0, *taken]) + 1):
        if i not in taken and len(taken) < (ctx.domain.iothreads or 0):
            taken.add(i)
            ctx.object({"qom-type": "iothread", "id": f"iothread{i}"})
    if default is not None:  # the main loop's own thread pool (<defaultiothread>)
        props = {"qom-type": "main-loop", "id": "main-loop"}
        for attr, prop in (("thread_pool_min", "thread-pool-min"), ("thread_pool_max", "thread-pool-max")):
            if default.get(attr) is not None:
                props[prop] = int(default.get(attr))
        ctx.object(props)


def _cpu_runs(cpus: str | set[int]) -> list[str]:
    """qemuBuildNumaCPUs: a cell's CPUs as libvirt writes them, from the parsed set: one 'a' or 'a-b' per run of
    consecutive CPUs ('0-0' -> ['0'], '0,1,3' -> ['0-1', '3']); the text as given when it does not parse."""
    found = cpus if isinstance(cpus, set) else _bitmap(cpus)
    if not found:
        return cpus.split(",") if isinstance(cpus, str) else []
    runs: list[str] = []
    ordered = sorted(found)
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return runs


def _hmat(d) -> bool:
    """NUMA caches or interconnects: the guest gets an ACPI HMAT table."""
    cells = d.cpu.numa if d.cpu else []
    return any(any(getattr(ch, "tag", None) == "cache" for ch in c.children) for c in cells) or \
        (d.cpu is not None and any(getattr(e, "tag", None) == "interconnects" for e in d.cpu.numa_extra))


_HIERARCHY = {None: "memory", "1": "first-level", "2": "second-level", "3": "third-level"}


def _hmat_args(ctx: Ctx, numbered: list) -> None:
    """-numa hmat-lb for each latency/bandwidth, then -numa hmat-cache for each cell cache."""
    d = ctx.domain
    links = next((e for e in d.cpu.numa_extra if getattr(e, "tag", None) == "interconnects"), None)
    for link in (x for x in (links if links is not None else []) if x.tag in ("latency", "bandwidth")):
        kind = link.tag
        value = link.get("value", "0")
        if kind == "bandwidth":
            unit = (link.get("unit") or "KiB").lower()
            value = f"{int(value) * {'kib': 1, 'k': 1, 'mib': 1024, 'm': 1024, 'gib': 1 << 20}.get(unit, 1)}K"
        ctx.add("-numa", f"hmat-lb,initiator={link.get('initiator')},target={link.get('target')},"
                         f"hierarchy={_HIERARCHY.get(link.get('cache'), 'memory')},"
                         f"data-type={link.get('type', 'access')}-{kind},{kind}={value}")
    for node, cell in numbered:
        for cache in (c for c in cell.children if getattr(c, "tag", None) == "cache"):
            size = next((s for s in cache if s.tag == "size"), None)
            line = next((s for s in cache if s.tag == "line"), None)
            policy = {"writeback": "write-back", "writethrough": "write-through"}.get(cache.get("policy", ""),
                                                                                  "none")
            ctx.add("-numa", f"hmat-cache,node-id={node},size={size.get('value') if size is not None else 0}K,"
                             f"level={cache.get('level')},associativity={cache.get('associativity', 'none')},"
                             f"policy={policy},line={line.get('value') if line is not None else 0}")


def _initiator(d, node: int, cell, numbered: list) -> int:
    """A node's initiator: itself when it has CPUs, else the one an interconnect names for it, else the first
    node with CPUs."""
    if cell.cpus:
        return node
    links = next((e for e in d.cpu.numa_extra if getattr(e, "tag", None) == "interconnects"), None)
    for link in (x for x in (links if links is not None else []) if x.tag in ("latency", "bandwidth")):
        if link.get("target") == str(node) and link.get("initiator") is not None:
            return int(link.get("initiator"))
    return next((n for n, c in numbered if c.cpus), 0)


def _numa_mem_supported(ctx: Ctx) -> bool:
    """The machine type takes -numa node,mem= (virQEMUCapsGetMachineNumaMemSupported: the fixture's
    numa-mem-supported of query-machines, libvirt's numaMemSupported)."""
    return bool(ctx.machine and ctx.machine.numa_mem)


def numa(ctx: Ctx) -> None:
    d = ctx.domain
    cells = d.cpu.numa if d.cpu else []
    numbered = sorted(((cell.id if cell.id is not None else i, cell) for i, cell in enumerate(cells)),
                      key=lambda pair: pair[0])
    # machine types before 5.1 still take -numa node,mem= where no cell needs a back-end object
    # (qemuBuildNumaCommandLine)
    need_backend = not _numa_mem_supported(ctx) or _hmat(d) or any(
        cell_needs_backend(ctx, node, cell.attrs.get("memAccess")) for node, cell in numbered)
    if numbered and not need_backend:
        legacy_memory_args(ctx)
    cpus: dict[int, str | set[int]] = {node: cell.cpus for node, cell in numbered if cell.cpus}
    sets = {node: _bitmap(text) for node, text in cpus.items() if isinstance(text, str)}
    if 0 in dict(numbered) and sum(map(len, sets.values())) < d.vcpus:
        # qemuDomainDefNumaCPUsRectify: the vCPUs no cell names go to node 0 (virDomainNumaFillCPUsInNode)
        cpus[0] = set(range(d.vcpus)).difference(*(c for node, c in sets.items() if node != 0))
    for node, cell in numbered:
        if need_backend:
            for obj in backend_objects(ctx, f"ram-node{node}", _cell_kib(cell.memory_kib) * 1024, node=node,
                                       access=cell.attrs.get("memAccess"), discard=cell.attrs.get("discard")):
                ctx.object(obj)
        opt = f"node,nodeid={node}"
        if cpus.get(node):
            opt += "".join(f",cpus={run}" for run in _cpu_runs(cpus[node]))
        if _hmat(d):
            opt += f",initiator={_initiator(d, node, cell, numbered)}"
        opt += f",memdev=ram-node{node}" if need_backend else f",mem={_cell_kib(cell.memory_kib) // 1024}"
        ctx.add("-numa", opt)
    given: dict[tuple[int, int], str] = {}
    for node, cell in numbered:
        dist = next((c for c in cell.children if getattr(c, "tag", None) == "distances"), None)
        for sib in (s for s in (dist if dist is not None else []) if s.tag == "sibling"):
            given[(node, int(sib.get("id", "0")))] = sib.get("value", "")
    if given:  # the whole table after the nodes: local distance 10, the other direction mirrored
        nodes = [n for n, _ in numbered]
        for src in nodes:
            for dst in nodes:
                value = given.get((src, dst)) or given.get((dst, src)) or ("10" if src == dst else None)
                if value:
                    ctx.add("-numa", f"dist,src={src},dst={dst},val={value}")
    if _hmat(d):
        _hmat_args(ctx, numbered)


def clock_and_pm(ctx: Ctx) -> None:
    d = ctx.domain
    ctx.add("-uuid", d.uuid) if d.uuid else None
    sysinfo_args(ctx)
    genid = next((e for e in d.extra if getattr(e, "tag", None) == "genid"), None)
    if genid is not None:  # an empty <genid/> gets a generated GUID (the harness's fixed one)
        ctx.device({"driver": "vmgenid", "guid": (genid.text or "").strip() or HARNESS_GENERATED_UUID,
                    "id": "vmgenid0"})
    if not d.devices.graphics:
        ctx.add("-display", "none")
    ctx.add("-no-user-config", "-nodefaults")
    clock = d.clock
    rtc = f"base={_rtc_base(clock)}"
    rtc_timer = _timer(ctx, "rtc")
    if rtc_timer and rtc_timer.get("track") in ("realtime", "wall"):  # libvirt's realtime is QEMU's rt
        rtc += f",clock={'rt' if rtc_timer['track'] == 'realtime' else 'host'}"
    if rtc_timer and rtc_timer.get("tickpolicy") == "catchup":
        rtc += ",driftfix=slew"
    ctx.add("-rtc", rtc)
    pit = _timer(ctx, "pit")
    # qemuBuildClockCommandLine: delay (also with no tickpolicy) or discard, where QEMU has the KVM PIT's property
    policy = pit.get("tickpolicy") or "delay" if pit is not None else None
    if policy in ("delay", "discard") and ctx.caps.has("kvm-pit-lost-tick-policy"):
        ctx.add("-global", f"kvm-pit.lost_tick_policy={policy}")
    hpet = _timer(ctx, "hpet")
    if hpet and hpet.get("present") == "no" and not ctx.caps.has("machine-hpet") and ctx.arch in ("x86_64", "i686"):
        ctx.add("-no-hpet")  # a PC's, before QEMU 8.0 (later: -machine hpet=off)
    # qemuBuildPMCommandLine: with set-action (QEMU 6.0+) the lifecycle actions are set over QMP; before it,
    # -no-reboot when the domain allows no reboot (qemuProcessRebootAllowed; libvirt's defaults when absent)
    if not ctx.caps.has("set-action") and d.on_reboot == "destroy" and (d.on_poweroff or "destroy") == "destroy" \
            and (d.on_crash or "destroy") in ("destroy", "coredump-destroy"):
        ctx.add("-no-reboot")
    else:
        ctx.add("-no-shutdown")
    if (ctx.is_x86 or ctx.arch == "aarch64") and "acpi" not in d.features and \
            (ctx.machine is None or ctx.machine.acpi is None):
        ctx.add("-no-acpi")
    if ctx.is_x86 and d.pm:
        dev = "ICH9-LPC" if ctx.is_q35 else "PIIX4_PM"
        for tag, name in (("suspend-to-mem", "disable_s3"), ("suspend-to-disk", "disable_s4")):
            if tag in d.pm:
                ctx.add("-global", f"{dev}.{name}={0 if d.pm[tag] == 'yes' else 1}")


# <sysinfo type='smbios'> blocks -> SMBIOS table type and the entries libvirt passes, in its order
_SMBIOS = (("bios", 0, ("vendor", "version", "date", "release")),
           ("system", 1, ("manufacturer", "product", "version", "serial", "uuid", "sku", "family")),
           ("baseBoard", 2, ("manufacturer", "product", "version", "serial", "asset", "location")),
           ("chassis", 3, ("manufacturer", "version", "serial", "asset", "sku")))


def sysinfo_args(ctx: Ctx) -> None:
    """-smbios tables from <sysinfo type='smbios'> when <os><smbios mode='sysinfo'/>, and -fw_cfg items from
    <sysinfo type='fwcfg'> (qemuBuildSmbiosCommandLine, qemuBuildSysinfoCommandLine)."""
    d = ctx.domain
    for info in (e for e in d.extra if getattr(e, "tag", None) == "sysinfo"):
        if info.get("type") == "smbios" and d.os.smbios_mode == "sysinfo":
            for tag, table, keys in _SMBIOS:
                for block in (b for b in info if b.tag == tag):
                    entries = {e.get("name"): (e.text or "") for e in block if e.tag == "entry"}
                    fields = [f"{k}={escape_opt_value(entries[k])}" for k in keys if k in entries]
                    if fields:
                        ctx.add("-smbios", ",".join([f"type={table}", *fields]))
            for block in (b for b in info if b.tag == "oemStrings"):
                values = [f"value={escape_opt_value(e.text or '')}" for e in block if e.tag == "entry"]
                if values:
                    ctx.add("-smbios", ",".join(["type=11", *values]))
        elif info.get("type") == "fwcfg":
            for entry in (e for e in info if e.tag == "entry"):
                what = f"file={escape_opt_value(entry.get('file'))}" if entry.get("file") else \
                    f"string={escape_opt_value(entry.text or '')}"
                ctx.add("-fw_cfg", f"name={escape_opt_value(entry.get('name', ''))},{what}")


def _rtc_base(clock) -> str:
    """-rtc base= from <clock offset=>: an absolute start or a variable adjustment counts from the
    harness's fixed "now" (HARNESS_NOW)."""
    if clock is None:
        return "utc"
    if clock.offset in ("localtime", "timezone"):
        return "localtime"
    if clock.offset == "absolute" and clock.attrs.get("start", "").isdigit():
        return datetime.fromtimestamp(int(clock.attrs["start"]), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if clock.offset == "variable" and clock.attrs.get("basis", "utc") in ("utc", "localtime"):
        # a localtime basis adds the host's offset from UTC (qemuBuildClockArgStr)
        adjustment = int(clock.attrs.get("adjustment", "0") or 0)
        if clock.attrs.get("basis") == "localtime":
            adjustment += HARNESS_UTC_OFFSET
        return datetime.fromtimestamp(HARNESS_NOW + adjustment, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return "utc"


def boot(ctx: Ctx) -> None:
    o = ctx.domain.os
    opts = []
    if o.bootmenu.get("enable") in ("yes", "no"):
        opts.append(f"menu={'on' if o.bootmenu['enable'] == 'yes' else 'off'}")
        if o.bootmenu.get("timeout") and o.bootmenu["enable"] == "yes":
            opts.append(f"splash-time={o.bootmenu['timeout']}")
    if o.bios.get("rebootTimeout"):
        opts.append(f"reboot-timeout={o.bios['rebootTimeout']}")
    opts.append("strict=on")
    ctx.add("-boot", ",".join(opts))
    if o.kernel:
        ctx.add("-kernel", o.kernel)
    if o.initrd:
        ctx.add("-initrd", o.initrd)
    if o.cmdline:
        ctx.add("-append", o.cmdline)
    shim = next((e for e in o.extra if getattr(e, "tag", None) == "shim"), None)
    if shim is not None and (shim.text or "").strip():
        ctx.add("-shim", shim.text.strip())
    if o.dtb:
        ctx.add("-dtb", o.dtb)
    acpi = next((e for e in o.extra if getattr(e, "tag", None) == "acpi"), None)
    for table in (t for t in (acpi if acpi is not None else []) if t.tag == "table"):
        kind = table.get("type", "raw")  # raw tables carry their own signature; others name theirs
        sig = "" if kind == "raw" else f"sig={kind.upper()},"
        ctx.add("-acpitable", f"{sig}file={escape_opt_value((table.text or '').strip())}")
