"""host-model CPUs: the model and features libvirt computes from QEMU's host CPU expansion.

libvirt's steps for ``<cpu mode='host-model'>`` on x86:

1. the host CPU of the domain's accelerator (``<domain type='kvm'>``: QEMU's expansion of
   ``host`` under KVM; ``type='qemu'``: of ``max`` under TCG), without the features QEMU
   marks as not migratable, is decoded against libvirt's CPU map and the CPU models QEMU
   offers under that accelerator (conformance/argv/cpu_x86.py). When QEMU did not say
   which features migrate, the whole CPU is decoded and the map's non-migratable
   features are dropped afterwards. A QEMU that cannot report unavailable features
   (libvirt's ``cpu-unavailable-features``) gets no MSR features;
2. the domain's CPU becomes that model with those features, then the domain's own
   ``<feature>`` elements update or extend the list;
3. features libvirt never passes to QEMU are dropped, and so are disabled features the
   host CPU expansion does not name (QEMU does not know them: they are off anyway);
4. ``-cpu MODEL,feat=on,...,feat=off`` lists them in that order, in QEMU's spelling.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.argv import cpu_x86
from conformance.argv.cpu_map import find_cpu_map, load_x86_map
from conformance.caps.model import CpuModel, HostCpu
from conformance.errors import UnsupportedByQemu

if TYPE_CHECKING:
    from conformance.argv.context import Ctx

_POLICIES = {"require": cpu_x86.REQUIRE, "force": cpu_x86.REQUIRE, "disable": cpu_x86.DISABLE,
             "forbid": cpu_x86.DISABLE}


def host_model_cpu(ctx: Ctx) -> tuple[str, list[str]]:
    """(model, ['feature=on', ..., 'feature=off']) for <cpu mode='host-model'>."""
    d = ctx.domain
    if not ctx.is_x86:
        raise UnsupportedByQemu(f"<cpu mode='host-model'> is not implemented for {ctx.arch}", path=d.source,
                                hint="use mode='host-passthrough' or a named model")
    accel = "kvm" if d.type == "kvm" else "tcg"
    host = ctx.caps.host_cpu(accel)
    if host is None:
        raise UnsupportedByQemu(
            f"<cpu mode='host-model'> needs QEMU's host CPU expansion under {accel.upper()}, which these "
            f"capabilities ({ctx.caps.label}) do not carry", path=d.source,
            hint=("re-probe the binary (`qemu-conformance probe`) on a host where "
                  f"{'/dev/kvm works' if accel == 'kvm' else 'it runs'}, or re-import libvirt's caps XML"))
    cpu_map = load_x86_map(find_cpu_map())
    models = ctx.caps.cpu_models_for(accel) if ctx.caps.cpu_models else None
    drop_msr = not ctx.caps.has("cpu-unavailable-features")
    decoded = migratable_host_model(host, models, cpu_map.folder, drop_msr)

    features = list(decoded.features)
    for policy, name in (d.cpu.features if d.cpu else []):
        wanted = _POLICIES.get(policy)
        if wanted is None:
            continue
        for i, (known, _) in enumerate(features):
            if known == name:
                features[i] = (name, wanted)
                break
        else:
            features.append((name, wanted))

    known_to_qemu = {cpu_x86.from_qemu(p.name) for p in host.properties}
    args = []
    for name, policy in features:
        if name in cpu_x86.NEVER_PASSED:
            continue
        if policy == cpu_x86.DISABLE and name not in known_to_qemu:
            continue
        args.append(f"{cpu_x86.to_qemu(name)}={'on' if policy == cpu_x86.REQUIRE else 'off'}")
    return decoded.model, args


@lru_cache(maxsize=64)
def migratable_host_model(host: HostCpu, models: tuple[CpuModel, ...] | None, map_folder: Path,
                          drop_msr: bool) -> cpu_x86.DecodedCpu:
    """The host CPU libvirt offers guests: decoded from the migratable part of QEMU's expansion."""
    cpu_map = load_x86_map(map_folder)
    allowed = None
    if models is not None:
        allowed = {m.name: tuple(cpu_x86.from_qemu(b) for b in m.blockers) for m in models}
    data = cpu_x86.data_from_properties(cpu_map, host.properties, migratable=host.migratability)
    decoded = cpu_x86.decode(cpu_map, data, allowed)
    features = decoded.features
    if not host.migratability:
        features = tuple((n, p) for n, p in features
                         if n not in cpu_map.feature_by_name or cpu_map.feature_by_name[n].migratable)
    if drop_msr:
        features = tuple((n, p) for n, p in features
                         if n not in cpu_map.feature_by_name or not cpu_map.is_msr(cpu_map.feature_by_name[n]))
    return cpu_x86.DecodedCpu(decoded.model, decoded.vendor, features)
