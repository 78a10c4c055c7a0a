"""Capability flags derived as libvirt derives them: each probed fixture in capsdata/ against libvirt's own
fixture of the same QEMU minor version (aarch64: the newest libvirt has), every difference listed, and every
difference either explained from the probe's own data or counted against the agreement."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.caps.flags import LIBVIRT_ALIASES, RULES, WHERE_BY_KIND
from conformance.caps.libvirt_import import history
from conformance.caps.model import NOT_LIBVIRT_FLAGS, Capabilities
from conformance.caps.store import resolve

# (probed fixture, libvirt's fixture of the same minor version, or its newest of that arch)
PAIRS = [
    ("7.2.22:x86_64", "libvirt-11.3.0/caps_7.2.0_x86_64.xml"),
    ("10.0.2:x86_64", "libvirt-11.3.0/caps_10.0.0_x86_64.xml"),
    ("10.0.2:aarch64", "libvirt-11.3.0/caps_8.2.0_aarch64.xml"),
]
AGREEMENT_GOAL = 0.95


@dataclass(frozen=True)
class Explanation:
    reason: str
    holds: Callable[[Capabilities], bool]  # the probe's own data that shows it


def _lacks_types(*types: str) -> Callable[[Capabilities], bool]:
    return lambda caps: not set(types) & caps.qom_types


def _has_types(*types: str) -> Callable[[Capabilities], bool]:
    return lambda caps: set(types) <= caps.qom_types


def _lacks_fact(fact: str) -> Callable[[Capabilities], bool]:
    return lambda caps: fact not in caps.schema


# Differences the build or the probe explains (Debian's configure options and module packages, the probe's
# accelerator). Each names the probe data that shows it; a difference without one counts as disagreement.
BUILD = {
    "cryptodev-backend-lkcf": Explanation("built without the Linux kernel crypto (keyctl) back-end: no "
                                          "cryptodev-backend-lkcf type", _lacks_types("cryptodev-backend-lkcf")),
    "qxl": Explanation("the QXL module (hw-display-qxl) is not part of this build: no qxl-vga type",
                       _lacks_types("qxl-vga", "qxl")),
    "qxl.vgamem_mb": Explanation("no qxl-vga type (module not in this build)", _lacks_types("qxl-vga")),
    "qxl.vram64_size_mb": Explanation("no qxl-vga type (module not in this build)", _lacks_types("qxl-vga")),
    "spice-gl": Explanation("no -spice option: the SPICE module (ui-spice-core) is not part of this build",
                            _lacks_fact("cmdline:spice/gl")),
    "spice-rendernode": Explanation("no -spice option (SPICE module not in this build)",
                                    _lacks_fact("cmdline:spice/rendernode")),
    "virtio-blk-vhost-vdpa": Explanation("built without libblkio: blockdev-add has no virtio-blk-vhost-vdpa driver",
                                         _lacks_fact("blockdev-add/arg-type/+virtio-blk-vhost-vdpa/$fdset")),
    "virtio-gpu-gl-pci": Explanation("the virgl module (hw-display-virtio-gpu-gl) is not part of this build",
                                     _lacks_types("virtio-gpu-gl-pci")),
    "virtio-vga-gl": Explanation("the virgl VGA module is not part of this build", _lacks_types("virtio-vga-gl")),
    "kvm": Explanation("probed under TCG (this host's aarch64 binary has no KVM)",
                       lambda caps: caps.provenance.accel == "tcg"),
    "cpu.kvm-no-adjvtime": Explanation("a KVM-only property of max-arm-cpu: probed under TCG",
                                       lambda caps: caps.provenance.accel == "tcg"),
    "ccid-emulated": Explanation("Debian builds the smart-card devices (libcacard); libvirt's 8.2 aarch64 build "
                                 "did not", _has_types("ccid-card-emulated")),
    "ccid-passthru": Explanation("Debian builds the smart-card devices; libvirt's aarch64 build did not",
                                 _has_types("ccid-card-passthru")),
    "spice": Explanation("Debian's aarch64 build has SPICE; libvirt's 8.2 aarch64 build did not",
                         lambda caps: "query-spice" in caps.commands),
    "memory-backend-file.pmem": Explanation("Debian builds with libpmem; libvirt's aarch64 build did not",
                                            lambda caps: "pmem" in caps.type_properties.get("memory-backend-file", {})),
}


def libvirt_flags(path: Path) -> set[str]:
    return set(re.findall(r"<flag name='([^']+)'", path.read_text()))


def version_difference(flag: str, corpus: Path) -> str | None:
    """A flag libvirt's own x86_64 fixtures show appearing or going between QEMU 8.1 and 10.0."""
    old = libvirt_flags(corpus / "caps" / "libvirt-11.3.0" / "caps_8.1.0_x86_64.xml")
    new = libvirt_flags(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64.xml")
    if flag in new and flag not in old:
        return "newer than QEMU 8.2 (libvirt's x86_64 fixtures have it from after 8.1 up to 10.0)"
    if flag in old and flag not in new:
        return "gone by QEMU 10.0 (libvirt's x86_64 fixtures have it in 8.1, not in 10.0)"
    return None


def compare(probed_spec: str, libvirt_file: str, corpus: Path) -> dict:
    probed = resolve(probed_spec)
    theirs = libvirt_flags(corpus / "caps" / libvirt_file)
    retired = {r["flag"] for r in history()["retired"]}
    to_libvirt = {ours: lv for lv, ours in LIBVIRT_ALIASES.items()}
    ours = {to_libvirt.get(f, f) for f in probed.flags} - NOT_LIBVIRT_FLAGS - retired - {"machine.acpi"}
    major, minor = (int(x) for x in libvirt_file.split("_")[1].split(".")[:2])
    other_version = (probed.version.major, probed.version.minor) != (major, minor)
    explained, unexplained = {}, {}
    for flag in sorted(ours ^ theirs):
        side = "libvirt only" if flag in theirs else "probe only"
        why = BUILD.get(flag)
        version = version_difference(flag, corpus) if other_version else None
        if why is not None and why.holds(probed):
            explained[flag] = f"{side}: {why.reason}"
        elif version is not None:
            explained[flag] = f"{side}: {version}"
        else:
            unexplained[flag] = side
    union = len(ours | theirs)
    return {"common": ours & theirs, "explained": explained, "unexplained": unexplained,
            "agreement": (len(ours & theirs) + len(explained)) / union, "libvirt": theirs, "ours": ours}


@pytest.mark.parametrize(("probed", "libvirt_file"), PAIRS, ids=[p for p, _ in PAIRS])
def test_probed_flags_agree_with_libvirt(probed: str, libvirt_file: str, corpus: Path) -> None:
    result = compare(probed, libvirt_file, corpus)
    listing = "; ".join([f"{f} ({why})" for f, why in result["explained"].items()] +
                        [f"{f} ({side}, unexplained)" for f, side in result["unexplained"].items()])
    assert result["agreement"] >= AGREEMENT_GOAL, f"{result['agreement']:.1%}: {listing}"
    assert not result["unexplained"], listing
    assert len(result["common"]) >= 150


def test_every_rule_names_where_libvirt_probes_it() -> None:
    for rule in RULES:
        assert rule.source, rule.flag
        assert rule.kind in WHERE_BY_KIND or rule.where, rule.flag


def test_an_unexplained_difference_counts_against_agreement(corpus: Path, monkeypatch) -> None:
    """The explanation must hold in the probe's data: without it the same difference is disagreement."""
    monkeypatch.setitem(BUILD, "cryptodev-backend-lkcf",
                        Explanation("pretend", _has_types("cryptodev-backend-lkcf")))
    result = compare("7.2.22:x86_64", "libvirt-11.3.0/caps_7.2.0_x86_64.xml", corpus)
    assert result["unexplained"] == {"cryptodev-backend-lkcf": "libvirt only"}
