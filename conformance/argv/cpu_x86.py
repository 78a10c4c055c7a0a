"""x86 CPU data -> the CPU model and feature list libvirt picks (libvirt's x86 decoding rules).

The rules, as libvirt applies them to QEMU's host CPU expansion:

- CPU data is the set of CPUID/MSR bits of every enabled feature property (names are
  translated from QEMU's spelling, unknown ones ignored), the vendor string and the
  family/model/stepping signature.
- Every model of the map is a candidate, newest (last) first, if QEMU offers it under the
  accelerator and its vendor matches. For a candidate, the features the data has beyond
  the model are required, the model's features the data lacks are disabled, and so is
  every feature QEMU names as blocking the model (unless the data has it beyond the
  model); features the model lost (``removed='yes'``) are disabled too. Each list is in
  map order, a feature taking its bits away from the rest.
- A candidate replaces the current best when it may decode guest CPUs and: the best
  does not match the signature but the candidate does; or, neither or both matching, its
  feature list costs less: one per required feature, and the disabled ones count 2, 3,
  4, ... (on ties fewer disabled wins). The count walks the list with a bound that shrinks
  by one per disabled feature found, as libvirt's loop does, so late disabled features
  can go uncounted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from conformance.argv.cpu_map import X86Map
from conformance.errors import UnsupportedByQemu

# libvirt feature name -> QEMU's spelling (only where they differ; libvirt translates both ways)
LIBVIRT_TO_QEMU: dict[str, str] = {
    "cmp_legacy": "cmp-legacy",
    "ds_cpl": "ds-cpl",
    "fxsr_opt": "fxsr-opt",
    "kvm_pv_eoi": "kvm-pv-eoi",
    "kvm_pv_unhalt": "kvm-pv-unhalt",
    "lahf_lm": "lahf-lm",
    "nodeid_msr": "nodeid-msr",
    "pclmuldq": "pclmulqdq",
    "perfctr_core": "perfctr-core",
    "perfctr_nb": "perfctr-nb",
    "tsc_adjust": "tsc-adjust",
}
QEMU_TO_LIBVIRT: dict[str, str] = {q: lv for lv, q in LIBVIRT_TO_QEMU.items()}

# features libvirt never passes to QEMU (QEMU never had them, or they did nothing)
NEVER_PASSED = frozenset({"cmt", "mbm_total", "mbm_local", "osxsave", "ospke"})

_SIGNATURE_MASK = 0x0FFF3FFF
_BASE_PENALTY = 2

REQUIRE = "require"
DISABLE = "disable"


def to_qemu(name: str) -> str:
    return LIBVIRT_TO_QEMU.get(name, name)


def from_qemu(name: str) -> str:
    return QEMU_TO_LIBVIRT.get(name, name)


def make_signature(family: int, model: int, stepping: int) -> int:
    """CPUID leaf 1 EAX for family/model/stepping (extended family and model as the CPU encodes them)."""
    sig = 0
    if family > 0xF:
        sig |= (family - 0xF) << 20
        family = 0xF
    sig |= (model >> 4) << 16
    sig |= family << 8
    sig |= (model & 0xF) << 4
    sig |= stepping & 0xF
    return sig & _SIGNATURE_MASK


def split_signature(sig: int) -> tuple[int, int, int]:
    """Leaf 1 EAX -> (family, model, stepping)."""
    family = ((sig >> 20) & 0xFF) + ((sig >> 8) & 0xF)
    model = ((sig >> 12) & 0xF0) + ((sig >> 4) & 0xF)
    return family, model, sig & 0xF


@dataclass(frozen=True)
class CpuData:
    """CPUID/MSR bits (see cpu_map.X86Map) plus the leaf 1 signature, which no feature uses."""

    bits: int
    signature: int = 0


@dataclass(frozen=True)
class DecodedCpu:
    model: str
    vendor: str | None
    features: tuple[tuple[str, str], ...]  # (libvirt feature name, REQUIRE | DISABLE), in libvirt's order


def data_from_properties(cpu_map: X86Map, properties: Iterable, *, migratable: bool) -> CpuData:
    """QEMU's host CPU expansion -> CPU data: enabled features (minus non-migratable ones when asked),
    vendor string, signature."""
    bits = 0
    family = model = stepping = 0
    for prop in properties:
        name = from_qemu(prop.name)
        if prop.type == "boolean":
            if not prop.enabled or (migratable and prop.migratable is False):
                continue
            feature = cpu_map.feature_by_name.get(name)
            if feature is not None:
                bits |= feature.bits
        elif prop.type == "string" and name == "vendor":
            raw = prop.value.encode("latin-1", "replace")
            if len(raw) == 12:
                bits |= cpu_map.cpuid_bits(0, 0, {"ebx": int.from_bytes(raw[0:4], "little"),
                                                  "edx": int.from_bytes(raw[4:8], "little"),
                                                  "ecx": int.from_bytes(raw[8:12], "little")})
        elif prop.type == "number" and name in ("family", "model", "stepping"):
            value = int(prop.value)
            if name == "family":
                family = value
            elif name == "model":
                model = value
            else:
                stepping = value
    return CpuData(bits, make_signature(family, model, stepping))


def _filter_broken_tsx(cpu_map: X86Map, bits: int, vendor: str | None, signature: int) -> int:
    """Intel Haswell/Broadwell steppings whose TSX was disabled by microcode: drop hle and rtm."""
    if vendor != "Intel":
        return bits
    family, model, stepping = split_signature(signature)
    if family == 6 and ((model == 63 and stepping < 4) or model in (60, 69, 70)):
        for name in ("hle", "rtm"):
            feature = cpu_map.feature_by_name.get(name)
            if feature is not None:
                bits &= ~feature.bits
    return bits


def _candidate_features(cpu_map: X86Map, bits: int, model_name: str, blockers: Iterable[str]) -> list[tuple[str, str]]:
    model = cpu_map.model_by_name[model_name]
    extra = bits & ~model.bits
    missing = model.bits & ~bits
    for blocker in blockers:
        feature = cpu_map.feature_by_name.get(blocker)
        if feature is not None and extra & feature.bits != feature.bits:
            missing |= feature.bits
    features = [(name, REQUIRE) for name in cpu_map.feature_names(extra)]
    features += [(name, DISABLE) for name in cpu_map.feature_names(missing)]
    listed = {name for name, _ in features}
    features += [(name, DISABLE) for name in model.removed if name not in listed]
    return features


def _cost(features: list[tuple[str, str]]) -> tuple[int, int]:
    """(enabled + penalised disabled, penalised disabled) with libvirt's shrinking loop bound."""
    enabled = len(features)
    disabled = 0
    penalty = _BASE_PENALTY
    i = 0
    while i < enabled:
        if features[i][1] == DISABLE:
            enabled -= 1
            disabled += penalty
            penalty += 1
        i += 1
    return enabled + disabled, disabled


def _signature_matches(cpu_map: X86Map, model_name: str, signature: int) -> bool:
    family, model, stepping = split_signature(signature)
    return any(s.matches(family, model, stepping) for s in cpu_map.model_by_name[model_name].signatures)


def decode(cpu_map: X86Map, data: CpuData, models: Mapping[str, tuple[str, ...]] | None) -> DecodedCpu:
    """The guest CPU model + features libvirt decodes ``data`` to.

    ``models``: the CPU models QEMU offers (name -> blocking features, libvirt spelling);
    None allows every model of the map.
    """
    vendor = cpu_map.vendor_of(data.bits)
    bits = data.bits & ~cpu_map.vendors[vendor] if vendor else data.bits
    signature = data.signature
    bits = _filter_broken_tsx(cpu_map, bits, vendor, signature)

    best: str | None = None
    best_features: list[tuple[str, str]] = []
    best_cost = (0, 0)
    for candidate in reversed(cpu_map.models):
        if models is not None and candidate.name not in models:
            continue
        if vendor and candidate.vendor and vendor != candidate.vendor:
            continue
        if not candidate.decode_guest:
            continue
        features = _candidate_features(cpu_map, bits, candidate.name,
                                       models.get(candidate.name, ()) if models is not None else ())
        cost = _cost(features)
        if best is None:
            better = True
        else:
            better = False
            decided = False
            if signature:
                best_match = _signature_matches(cpu_map, best, signature)
                cand_match = _signature_matches(cpu_map, candidate.name, signature)
                if best_match != cand_match:
                    better, decided = cand_match, True
            if not decided:
                better = cost[0] < best_cost[0] or (cost[0] == best_cost[0] and cost[1] < best_cost[1])
        if better:
            best, best_features, best_cost = candidate.name, features, cost
    if best is None:
        raise UnsupportedByQemu("no CPU model of libvirt's CPU map fits this host CPU",
                                hint=f"CPU map {cpu_map.folder}; a newer map may know the model")
    return DecodedCpu(best, vendor, tuple(best_features))
