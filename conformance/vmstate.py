"""The static migration prediction (stage ``vmstate``): which of a case's devices cannot migrate from one
build to another under one machine type, before any guest boots.

Two sources of evidence, each asked of the builds themselves and compared between the source and the
destination of an ordered pair:

1. **Migration state descriptions** (``-dump-vmstate``). The dump is class-level: the ``q35`` and ``pc``
   dumps of one build differ only in the machine's name (measured on 5.2.0, 7.2.22 and 10.0.2), so one
   dump per build is kept (``build_dump``), cached by the binary's content. The rules (``compare_entry``)
   follow QEMU's ``scripts/vmstate-static-checker.py``, written here from what it checks, and go further
   where the wire format says more:

   - V1 *section*: the destination must know the source's section (a device class with the same wire
     name, ``Description.name``; a class renamed with its wire name kept is the same section).
   - V2 *version*: a source ``version_id`` above the destination's is an error, as is one below the
     destination's ``minimum_version_id``. Top-level sections and subsections put their version on the
     wire; a nested struct's version is not sent: each side reads it with its own (so the source's
     nested version is checked against the destination's range as the checker does, and the fields are
     gated by each side's own version, V3).
   - V3 *fields*: the fields each side puts on the wire at the version in use (a field with
     ``version_id`` above it is not sent, nor read) must line up in order, with equal sizes. Structs are
     descended into (their fields are what goes on the wire: moving fields into a struct, or renaming the
     struct, changes nothing on the wire). ``unused`` padding on one side matches any fields of the same
     total size on the other. The checker stops at the end of the source's fields; here a destination
     that reads more fields than the source sends is also a break (it would read the next section's
     bytes), unless those fields exist only when a run-time test holds (``field_exists``), which a
     dump cannot decide; a struct field behind such a test puts every field in it behind it (6.0's esp
     reads its Fifo8 structs only from a version-5 esp stream: 5.2.0 -> 7.2.22 loaded live).
   - V4 *names*: a field renamed at the same place with the same size is a hazard (the wire is the same,
     the meaning may not be; QEMU's checker reports it too, bar its own list) unless the rename is in
     ``FIELD_RENAMES``, each entry with its reason (esp's ``mig_*`` fields: kept for old streams, loaded live).
   - V5 *subsections*: every subsection the source can send must exist in the destination (it is sent
     when its ``needed()`` holds at run time: a static check cannot know, so this is a hazard "if sent", not
     a certainty); a destination-only subsection is fine (it is optional on the wire). The dump does not
     carry ``needed()``, so ``SUBSECTION_GATES`` says, for the subsections met here, what in QEMU gates
     them: one gated by guest state, by a property that is off on the source under the machine type, or
     by a device type other than the one compared is ``conditional`` (a warning naming the subsection:
     ``details.conditional``, not a hazard); a property that is on keeps it a hazard, with its value.

   A device the destination plugs or adds but its dump does not describe (7.2's ``piix3-ide``) is the
   dump's blind spot, not a missing section. The dump's other blind spots (QEMU's own): virtio devices
   are one opaque field (custom save code), the x86 CPU has no section, and run-time decisions
   (``needed()``, ``field_exists``, config space contents) are not in it. Hence the second source.

2. **Effective property values under each machine type.** Class defaults (``device-list-properties``)
   miss the machine type's compat properties, so each build is started paused (``-M TYPE -nodefaults
   -S``, TCG) with the device types of the cases plugged (each by its type alone, with placeholders for
   the backends and buses a type insists on), and every qdev property of every instantiated device, of its
   device children (``virtio-backend``) and of every device the machine adds itself is read back from the
   live devices with one ``info qtree`` (QMP ``human-monitor-command``). Reading the same values with
   ``qom-list``/``qom-get`` took ~1500 QMP round trips and 4.7 s per build and machine type; ``info qtree``
   takes 0.01 s (0.3-0.9 s per build and machine type with QEMU's start). What it leaves out: QOM-only
   properties (CPUs, which the argv's ``-cpu`` decides anyway). The two builds' values under the same
   machine type are compared (``compare_properties``):

   - P1 a property both builds have, with different values, is a hazard naming both values;
   - P2 a property only the newer build has (whichever side it is on): the older build cannot set it, so
     its value under the shared machine type must be the older build's behaviour. Fine when the machine
     type pins it (its value differs from the one under the newer build's newest machine type: a compat
     property is at work), when it is off, or when it is not a switch (a number or string such as
     ``irq``, ``iobase``, ``romsize`` exposes what the older build hard-coded; "auto" lets the device
     decide). A switch that is on and reads the same under the old machine type as under the newest is
     a hazard: nothing keeps the old behaviour (the shape of the 8.2 virtio-net USO break);
   - P3 a property only the older build has (removed later): fine when its value under the machine type
     is its value under the older build's newest machine type (the newer build hard-codes that); a
     hazard when the machine type pinned it elsewhere (the newer build can no longer express it);
   - ``PROPERTY_RENAMES``: a property renamed between builds (10.0's ``x-do-not-expose-native-hotplug-cap``
     is 7.2's ``x-native-hotplug`` inverted) is compared under its new name;
   - ``KNOWN_EXPOSED``: properties only the newer build has whose "on" is what the older build did
     without a property (rule P2 would flag them), each with its evidence; ``DEPENDS_ON``: properties
     that matter only when another is on (``x-ats-page-aligned`` needs ``ats``); ``EQUIVALENT_VALUES``:
     one meaning printed two ways (``rombar`` 1 and -1);
   - not compared (``NOT_COMPARED``, each with its reason): names of host-side backends, per-instance
     identities and placement the probe chose itself, QEMU's own bookkeeping, host-side knobs
     (``ioeventfd``) and ``legacy-*`` mirrors.
     ``x-*`` properties are compared: most of QEMU's compat knobs are ``x-`` properties
     (``x-pcie-lnksta-dllla``, ``x-migrate-msix``), so the prefix says "unstable interface", not "not
     guest-visible".

   ``query-machines`` with ``compat-props`` (9.1 and newer) names the compat entries of a machine type;
   where a build has it, a property hazard says whether that build's machine type sets the property.

   C1 *the same values without a QEMU*: a machine type's list of compat entries holds every entry it
   inherits from the newer types, so the entries in one type's list and not the other's (either way) are
   all that sets two machine types of a build apart. Where the build lists them (9.1 and newer), each family
   is read from its newest type down, and a device type takes the values read under the nearest newer type
   when no such entry applies to it (by ``qom-list-types implements=``: the type, a parent such as
   ``virtio-pci`` or ``pci-device``, or an interface), to its device children, to what its placeholders
   create (the bus it plugs into: a floppy's ``drive-type`` follows its isa-fdc's ``fallback``, which
   pc-*-2.5 sets), or to any device the machine adds itself (where a device realizes: 10.0's ``vmgenid``
   refuses ``pc-i440fx-2.4``, whose ``fw_cfg`` entry turns DMA off). A device copied says from where
   (``same_as``; the machine's own devices: ``machine_same_as``); one the newer type could not plug is
   probed again. What it leaves out: a machine type's code (its class fields, not compat entries) changing
   a device's values. Checked on 10.0.2 x86_64 and aarch64 over every machine type the sweep reads, against
   a run that read them all (``benchmarks/sweep.py --compare``). Builds before 9.1 cannot list their
   entries (the newer build's list is not theirs: entries are added to old types later, bad9c5a5166f did),
   so each of their machine types is read.

One build with itself has the same dump and values on both sides, so only what stops the VM from starting
is judged (``same_build``): a device the build refuses under the machine type and plugs under its family's
newest (vmgenid under pc-*-2.4, whose fw_cfg has no DMA) is "cannot plug it", on both sides.

Every hazard starts with the rule that found it (``[V3]``, ``[P1]``): the predicted-against-observed table
counts each rule's record from them.

Per case, the devices are the ``-device`` types of its argv as libvirt builds it for each build (a PCI
host device a case substitutes for a live run counts as its substitute, as the live run has it), their
device children, and the devices the machine type adds itself. A device the case argv sets a property of
compares the argv's value instead of the probed one (and the two argvs may differ). Everything a build
says is cached under ``$QEMU_CONFORMANCE_CACHE/vmstate/`` keyed by the binary's content (a build's
wrapper: its text and reported version), the machine type and the device type: a re-run costs seconds.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import coverage as coverage_module
from conformance.coverage import (
    FAMILIES,
    _culprit,
    _reason,
    _run_qemu,
    binary_key,
    dump_vmstate,
    parse_device_help,
    paused,
)
from conformance.errors import ConformanceError, LiveError
from conformance.paths import cache_dir
from conformance.qemu.process import LaunchFailed
from conformance.qemu.qmp import QmpCommandFailed, QmpError

CACHE_FORMAT = 3  # 2: refusals learnt per family under the newest type, ipmi-bmc-sim placeholders (16fda59);
# 3: a device's values may be taken from a newer machine type of the build (C1, ``same_as``)
COMPATIBLE = "compatible"

Say = Callable[[str], None]


class VmstateError(ConformanceError):
    """A build could not be asked for its state descriptions or properties."""


# --- the rules: data with their reasons ---------------------------------------------------------------

#: V4: field renames that keep the meaning, per section wire name: {section: {(old, new), ...}} (either
#: direction). Each was seen between the builds compared here; the reason says why it is harmless.
_ESP = {
    frozenset({"ti_rptr", "mig_ti_rptr"}): "esp's transfer buffer became a FIFO; the old read pointer is kept "
                                          "for the wire under mig_ (filled on save, read on load)",
    frozenset({"ti_wptr", "mig_ti_wptr"}): "as ti_rptr: the write pointer kept for the wire",
    frozenset({"ti_buf", "mig_ti_buf"}): "as ti_rptr: the buffer kept for the wire",
    frozenset({"ti_cmd", "mig_ti_cmd"}): "as ti_rptr: the command byte kept for the wire",
    frozenset({"data_in_ready", "data_ready"}): "the same flag renamed when data-out got its own path",
    # 6.0's esp rework kept these for streams of esp version 4 and older only (read behind a field_exists test
    # of the stream's version): 5.2.0 -> 7.2.22, every q35 and pc type, loaded live (docs/machines.md)
    frozenset({"cmdbuf", "mig_cmdbuf"}): "the command buffer kept for the wire of version 4 streams as mig_cmdbuf",
    frozenset({"cmdlen", "mig_cmdlen"}): "as cmdbuf: its length",
    frozenset({"deferred_status", "mig_deferred_status"}): "as cmdbuf: the deferred status byte",
    frozenset({"deferred_complete", "mig_deferred_complete"}): "as cmdbuf: the deferred-completion flag",
    frozenset({"dma_left", "mig_dma_left"}): "as cmdbuf: the DMA bytes left",
}
FIELD_RENAMES: dict[str, dict[frozenset[str], str]] = {
    "hpet": {frozenset({"num_timers", "num_timers_save"}):
             "num_timers became a user property; the count on the wire is copied through num_timers_save"},
    "pckbd": {frozenset({"pending", "pending_tmp"}): "the pending byte goes through a temporary on save and load"},
    "sd-card": {frozenset({"wp_groups", "wp_group_bmap"}): "the write-protect bitmap renamed, same bitmap"},
    "sysbusespscsi": _ESP,
    "pciespscsi": _ESP,
    "acpi-ged": {frozenset({"ghes_addr_le", "hw_error_le"}):
                 "the GHES error-block address renamed when a second GHES source was added (same 8 bytes)"},
}

@dataclass(frozen=True)
class SubsectionGate:
    """What a subsection's ``needed()`` tests, where the dump cannot say: guest state (``guest``: a run-time
    fact no probe reads), a property of the device or of its device children that must be on (``prop``),
    or the device types that send it at all (``types``); ``source``: what in QEMU says so."""

    source: str
    guest: str = ""
    prop: str = ""
    types: tuple[str, ...] = ()


#: V5: subsections sent only conditionally, each with what gates it in QEMU (facts from QEMU's source).
SUBSECTION_GATES: dict[str, SubsectionGate] = {
    "i8259/ltim": SubsectionGate(
        "hw/intc/i8259_common.c: needed() is the PIC's ltim state, which only the guest's ICW1 write sets (the "
        "level-triggered bit); Linux programs the PIC edge-triggered (measured: 9 live migrations 10.0 -> 7.2 "
        "went through)", guest="the guest programmed the PIC level-triggered (ICW1 LTIM)"),
    "virtio-gpu/blob": SubsectionGate(
        "hw/display/virtio-gpu.c: needed() is the device's blob flag, the 'blob' property (default off)",
        prop="blob"),
    "pflash_cfi01_blk_write": SubsectionGate(
        "hw/block/pflash_cfi01.c: needed() holds while a buffered write is open (blk_offset set by the guest's "
        "Write to Buffer command, reset when it commits)",
        guest="a buffered flash write is open at the switch-over (the guest's Write to Buffer command)"),
    "sd-card/ext_csd_modes-state": SubsectionGate(
        "hw/sd/sd.c: needed() is sd_is_emmc(), true for the emmc device type's protocol only", types=("emmc",)),
}
_V5 = re.compile(r"^\[V5\] .*?: subsection (?P<name>\S+) is unknown to the destination")
_SUBSECTION = re.compile(r"subsection (\S+) is unknown")
CONDITIONAL = "(conditional: "

#: Properties never compared, with the reason (prefix rules below).
NOT_COMPARED: dict[str, str] = {
    "type": "the QOM class name, not a setting",
    "realized": "QEMU's bookkeeping: the device is realized on both sides",
    "hotplugged": "QEMU's bookkeeping: whether this instance was hot-plugged",
    "parent_bus": "a link to the bus, a QOM path",
    "drive": "the name of a host-side block backend",
    "netdev": "the name of a host-side network backend",
    "chardev": "the name of a host-side character backend",
    "rng": "the name of a host-side entropy backend",
    "memdev": "the name of a host-side memory backend",
    "iothread": "the name of a host-side I/O thread",
    "audiodev": "the name of a host-side audio backend",
    "fsdev": "the name of a host-side file system backend",
    "vhostfd": "a host file descriptor", "vhostfds": "host file descriptors", "fd": "a host file descriptor",
    "mac": "chosen per instance (libvirt sets it; both sides of a migration get the same)",
    "addr": "the slot the probe chose (libvirt places every device itself)",
    "multifunction": "set by the probe's placement (several types per slot); libvirt sets it per device",
    "sas_address": "derived at realize from the device's own PCI address when unset: the probe's placement",
    "bus": "the bus the probe chose (libvirt places every device itself)",
    "bootindex": "set by libvirt per device (the probe sets none)",
    "serial": "a per-disk string libvirt sets",
    "id": "the device's name",
    "name": "a per-instance name (virtserialport)",
    "nr": "a per-instance number (virtserialport)",
    "ioeventfd": "how QEMU learns of queue notifications (an eventfd or a trap): host-side, not guest-visible, "
                 "not migrated",
}
#: Properties only the newer build has whose "on" is what the older build did without a property (rule P2
#: would flag them), each with the evidence.
KNOWN_EXPOSED: dict[str, str] = {
    "smm-enabled": "ICH9-LPC/PIIX4_PM/PIIX3 mirror the machine's own smm option into the device: the same "
                   "setting, newly visible",
    "smm-ranges": "q35-pcihost: whether the host bridge implements the SMRAM ranges it always implemented "
                  "(a switch for machines without them)",
    "has-acpi": "PIIX3 (10.0's merged PIIX): whether the machine's ACPI device is there, which the machine decided "
                "before",
    "x-native-hotplug": "pcie-root-port: native PCIe hot-plug, which every root port had before ACPI hot-plug "
                        "became an option (6.1); false is the new behaviour",
    "migrate-clk": "pl011: gates the pl011/clock subsection, which the older build already loads (its dump "
                   "lists it)",
    "dma-translation": "intel-iommu (7.2 added it; 5.2.0 has none): true is DMA remapping as every build had it "
                       "before, false a new IOMMU with interrupt remapping only; 5.2.0 <-> 7.2.22 and 10.0.2 "
                       "q35-misc-rich migrated with it true under every type, none broke for it",
}
#: Properties renamed between builds: old name -> (new name, whether the new one means the opposite, the
#: evidence). Compared under the new name, the old value inverted where it must be.
PROPERTY_RENAMES: dict[str, tuple[str, bool, str]] = {
    "x-native-hotplug": ("x-do-not-expose-native-hotplug-cap", True,
                         "pcie-root-port: 7.2's x-native-hotplug=false under pc-q35-6.1 is 10.0's "
                         "x-do-not-expose-native-hotplug-cap=true there (both read back; the 7.2 <-> 10.0 "
                         "migrations of q35-minimal under pc-q35-6.1 passed both ways)"),
}

#: Properties that matter only when another one is on: (that property, the reason).
DEPENDS_ON: dict[str, tuple[str, str]] = {
    "x-ats-page-aligned": ("ats", "the page-aligned bit is in the ATS capability, which exists only with ats=on"),
    "fs1gp": ("x-flts", "intel-iommu's first-stage 1 GiB pages exist only with first-stage translation on"),
}
NOT_COMPARED_PREFIXES: dict[str, str] = {
    "legacy-": "the string form of another property, compared through that one",
}
#: Values that mean "switched off" (rule P2).
OFF_VALUES = (False, 0, "", "off", "none", "disabled", None)

#: Placeholders for what a device type insists on when plugged alone: QEMU's words (a regular expression)
#: -> (the property, the options that make its backend, with {n} for a unique number).
BACKEND_PLACEHOLDERS: tuple[tuple[str, str, list[str]], ...] = (
    (r"\bdrive\b", "drive=vmsd{n}", ["-blockdev", "driver=null-co,node-name=vmsd{n},read-zeroes=on"]),
    (r"chardev|char device", "chardev=vmsc{n}", ["-chardev", "null,id=vmsc{n}"]),
    # "No voice": 5.2's and 7.2's gus without an audiodev, whose default audio backend opens no voice here (libvirt
    # gives every sound device an audiodev; with one, gus plugs under every type)
    (r"audiodev|audio driver|No voice", "audiodev=vmsa{n}", ["-audiodev", "none,id=vmsa{n}"]),
    (r"memdev", "memdev=vmsm{n}", ["-object", "memory-backend-ram,id=vmsm{n},size=4M,share=on"]),
    (r"cryptodev", "cryptodev=vmsy{n}", ["-object", "cryptodev-backend-builtin,id=vmsy{n}"]),
    (r"\bbmc\b", "bmc=vmsb{n}", ["-device", "ipmi-bmc-sim,id=vmsb{n}"]),
    (r"chassis not specified", "chassis_nr=1{n}", []),
    (r"chassis slot", "chassis=1{n}", []),  # two ports on the default chassis 0, slot 0
)


# --- 1. migration state descriptions ------------------------------------------------------------------

_DUMP_LOCK = threading.Lock()


def cache_root(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "vmstate"


def build_dump(binary: Path, arch: str, *, key: str | None = None, root: Path | None = None) -> dict[str, Any]:
    """The build's ``-dump-vmstate`` (one per build: it is class-level), cached by the binary's content."""
    key = key or binary_key(binary)
    path = cache_root(root) / "dumps" / f"{key}.json"
    with _DUMP_LOCK:
        if path.is_file():
            try:
                return dict(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass
        families = FAMILIES.get(arch)
        if not families:
            raise VmstateError(f"no machine family known for {arch}", path=binary)
        with tempfile.TemporaryDirectory(prefix="qemu-conformance-vmstate-") as tmp:
            dump = dump_vmstate(binary, families[0], Path(tmp))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(dump))
        tmp_path.replace(path)
        return dump


def find_entry(dump: dict[str, Any], qom_type: str, wire_name: str = "") -> dict[str, Any] | None:
    """A device class's entry, or the entry of a class with the same wire name (a renamed class)."""
    entry = dump.get(qom_type)
    if isinstance(entry, dict) and "Description" in entry:
        return entry
    if wire_name:
        for other in dump.values():
            if isinstance(other, dict) and (other.get("Description") or {}).get("name") == wire_name:
                return other
    return None


@dataclass(frozen=True)
class _Leaf:
    path: str  # dotted: struct fields are "struct.field"
    size: int
    conditional: bool  # field_exists: present only when a run-time test holds


def _sent(fields: Sequence[dict[str, Any]], version: int, prefix: str = "") -> list[_Leaf | tuple[str, dict[str, Any]]]:
    """The fields put on (or read from) the wire at ``version``: leaves, and nested structs as
    (path, field) to be expanded with each side's own struct version."""
    out: list[_Leaf | tuple[str, dict[str, Any]]] = []
    for f in fields:
        if int(f.get("version_id", 0)) > version:
            continue
        path = f"{prefix}{f.get('field', '?')}"
        if isinstance(f.get("Description"), dict):
            out.append((path, f))
        else:
            out.append(_Leaf(path, int(f.get("size", 0)), bool(f.get("field_exists"))))
    return out


def _renamed(section: str, a: str, b: str) -> str | None:
    """The reason a field rename is harmless, or None."""
    for pair, why in FIELD_RENAMES.get(section, {}).items():
        if a.rsplit(".", 1)[-1] in pair and b.rsplit(".", 1)[-1] in pair:
            return why
    return None


def compare_description(src: dict[str, Any], dst: dict[str, Any], section: str, *, wire_version: int | None,
                        where: str = "") -> list[str]:
    """Hazards of loading ``src``'s description into ``dst`` (V2, V3, V4, V5). ``wire_version``: the
    version the stream carries (sections, subsections); None for a nested struct (each side uses its
    own)."""
    out: list[str] = []
    name = str(src.get("name", section))
    here = f"{where}{name}"
    s_version = int(src.get("version_id", 0))
    d_version = int(dst.get("version_id", 0))
    d_min = int(dst.get("minimum_version_id", 0))
    if s_version > d_version:
        out.append(f"[V2] {here}: version {s_version} on the source, the destination takes at most {d_version}")
    elif s_version < d_min:
        out.append(f"[V2] {here}: version {s_version} on the source, the destination takes {d_min} or newer")
    if out and wire_version is not None:
        return out  # QEMU refuses the section outright
    read_version = wire_version if wire_version is not None else d_version
    send_version = wire_version if wire_version is not None else s_version
    out += _compare_fields(src.get("Fields") or [], dst.get("Fields") or [], send_version, read_version, section,
                           here)
    out += _struct_versions(src.get("Fields") or [], dst.get("Fields") or [], here)
    d_subs = {str(s.get("name")): s for s in dst.get("Subsections") or []}
    for sub in src.get("Subsections") or []:
        other = d_subs.get(str(sub.get("name")))
        if other is None:
            out.append(f"[V5] {here}: subsection {sub.get('name')} is unknown to the destination (the source sends "
                       "it when its test holds at run time)")
            continue
        out += compare_description(sub, other, section, wire_version=int(sub.get("version_id", 0)),
                                   where=f"{here}/")
    return out


def _compare_fields(s_fields: Sequence[dict[str, Any]], d_fields: Sequence[dict[str, Any]], s_version: int,
                    d_version: int, section: str, here: str) -> list[str]:
    out: list[str] = []
    src = _expand(_sent(s_fields, s_version))
    dst = _expand(_sent(d_fields, d_version))
    i = j = 0
    s_left = d_left = 0  # bytes of an 'unused' run still to be matched on the other side
    while i < len(src) and j < len(dst):
        s, d = src[i], dst[j]
        if s_left or d_left:
            if s_left:
                s_left -= d.size
                j += 1
                if s_left < 0:
                    return [*out, f"[V3] {here}: padding on the source ends inside destination field {d.path}"]
                if s_left == 0:
                    i += 1
            else:
                d_left -= s.size
                i += 1
                if d_left < 0:
                    return [*out, f"[V3] {here}: padding on the destination ends inside source field {s.path}"]
                if d_left == 0:
                    j += 1
            continue
        s_name, d_name = s.path.rsplit(".", 1)[-1], d.path.rsplit(".", 1)[-1]
        if s_name != d_name and "unused" in (s_name, d_name) and s.size != d.size:
            if _realigns(src, dst, i, j):
                i += 1
                j += 1
                continue
            if s_name == "unused":
                s_left = s.size - d.size
                j += 1
            else:
                d_left = d.size - s.size
                i += 1
            if s_left < 0 or d_left < 0:
                return [*out, f"[V3] {here}: padding of {max(s.size, d.size)} bytes against "
                              f"{min(s.size, d.size)} at {s.path} / {d.path}"]
            continue
        if s.size != d.size:
            return [*out, f"[V3] {here}: field {s.path} is {s.size} bytes on the source, {d.path} {d.size} on the "
                          "destination (the rest of the section is misread)"]
        if s_name != d_name and "unused" not in (s_name, d_name) and _renamed(section, s_name, d_name) is None:
            out.append(f"[V4] {here}: field {s.path} on the source is {d.path} on the destination (same place "
                       "and size, another name)")
        i += 1
        j += 1
    extra_src = [s for s in src[i:]]
    extra_dst = [d for d in dst[j:]]
    if s_left or d_left:
        return [*out, f"[V3] {here}: padding left unmatched at the end of the fields"]
    # the fields behind a run-time test are named only when no unconditional one is left over (QEMU decides
    # them from the stream's version or the device's state: a dump cannot, so they alone are no hazard)
    sure_src = [s for s in extra_src if not s.conditional]
    sure_dst = [d for d in extra_dst if not d.conditional]
    if sure_src:
        out.append(f"[V3] {here}: the source sends {', '.join(s.path for s in sure_src[:3])}"
                   f"{' ...' if len(sure_src) > 3 else ''}, which the destination does not read")
    if sure_dst:
        out.append(f"[V3] {here}: the destination reads {', '.join(d.path for d in sure_dst[:3])}"
                   f"{' ...' if len(sure_dst) > 3 else ''}, which the source does not send")
    return out


def _realigns(src: list[_Leaf], dst: list[_Leaf], i: int, j: int) -> bool:
    """Whether 'unused' padding against a field of another size is one for one: the dump gives an array's
    element size, not its count (7.2's e1000e ``core.eitr_intr_pending``, 5 bytes, is 10.0's ``unused``
    of 5), so when the next fields on both sides have the same name, the two are taken as the same bytes."""
    if i + 1 >= len(src) or j + 1 >= len(dst):
        return i + 1 >= len(src) and j + 1 >= len(dst)
    return src[i + 1].path.rsplit(".", 1)[-1] == dst[j + 1].path.rsplit(".", 1)[-1]


def _expand(items: list[_Leaf | tuple[str, dict[str, Any]]]) -> list[_Leaf]:
    """Leaves of the wire, nested structs expanded with their own version; the leaves of a struct field that
    exists only when a run-time test holds (``field_exists``: 7.2's esp ``fifo``, a Fifo8 read only from a
    version-5 esp stream) are conditional as the struct is."""
    leaves: list[_Leaf] = []
    for item in items:
        if isinstance(item, _Leaf):
            leaves.append(item)
            continue
        path, f = item
        desc = f["Description"]
        inner = _expand(_sent(desc.get("Fields") or [], int(desc.get("version_id", 0)), prefix=f"{path}."))
        if f.get("field_exists"):  # a struct behind a run-time test: every field in it is behind it too
            inner = [_Leaf(leaf.path, leaf.size, True) for leaf in inner]
        leaves += inner
    return leaves


def _struct_versions(s_fields: Sequence[dict[str, Any]], d_fields: Sequence[dict[str, Any]], here: str) -> list[str]:
    """V2 for nested structs met under the same path on both sides (their version is not on the wire)."""
    out: list[str] = []
    d_structs = [(str(f.get("field")), f["Description"]) for f in d_fields if isinstance(f.get("Description"), dict)]
    s_structs = [(str(f.get("field")), f) for f in s_fields if isinstance(f.get("Description"), dict)]
    for index, (name, f) in enumerate(s_structs):  # the n-th struct of a name on both sides
        desc = f["Description"]
        nth = sum(1 for n, _ in s_structs[:index] if n == name)
        same = [d for n, d in d_structs if n == name and d.get("name") == desc.get("name")]
        if nth >= len(same):
            continue
        other = same[nth]
        sv, dv, dmin = int(desc.get("version_id", 0)), int(other.get("version_id", 0)), int(
            other.get("minimum_version_id", 0))
        if sv > dv:
            out.append(f"[V2] {here}.{f.get('field')} ({desc.get('name')}): struct version {sv} on the source, "
                       f"{dv} on the destination")
        elif sv < dmin:
            out.append(f"[V2] {here}.{f.get('field')} ({desc.get('name')}): struct version {sv} on the source, the "
                       f"destination takes {dmin} or newer")
        out += _struct_versions(desc.get("Fields") or [], other.get("Fields") or [], f"{here}.{f.get('field')}")
    return out


def compare_entry(qom_type: str, src: dict[str, Any] | None, dst_dump: dict[str, Any],
                  has_device: Iterable[str] = ()) -> list[str]:
    """Hazards of migrating ``qom_type``'s state (``src``: its entry in the source's dump) into a build with
    ``dst_dump`` (V1-V5). No entry on the source: nothing is sent, nothing to check. ``has_device``: types the
    destination plugs or adds under the machine type: when its dump lacks one of them (7.2's dump has no
    ``piix3-ide``, though the pc machine adds one), that is the dump's blind spot, not a missing section."""
    if src is None:
        return []
    desc = src.get("Description") or {}
    wire = str(desc.get("name", qom_type))
    dst = find_entry(dst_dump, qom_type, wire)
    if dst is None:
        if qom_type in has_device:
            return []  # the destination has the device but its dump does not describe it: not checked here
        return [f"[V1] section {wire}: the destination has no state description for {qom_type}"]
    d_desc = dst.get("Description") or {}
    if str(d_desc.get("name", "")) != wire:
        return [f"[V1] section {wire}: the destination's {qom_type} sends section {d_desc.get('name')} instead"]
    out = compare_description(desc, d_desc, wire, wire_version=int(desc.get("version_id", 0)))
    return list(dict.fromkeys(out))


def gate_subsections(reasons: list[str], kind: str, values: dict[str, str]) -> list[str]:
    """V5 reasons with what gates their subsection (SUBSECTION_GATES): marked conditional (CONDITIONAL)
    when guest state gates it, when the gating property is off in ``values`` (the source's, under the machine
    type: the device's and its children's), or when ``kind`` is not a type that sends it; a gating property
    that is on is named in the hazard. Other reasons pass unchanged."""
    out = []
    for reason in reasons:
        found = _V5.match(reason)
        gate = SUBSECTION_GATES.get(found["name"]) if found else None
        if gate is None:
            out.append(reason)
        elif gate.guest:
            out.append(f"{reason} {CONDITIONAL}sent only if {gate.guest}; {gate.source})")
        elif gate.types and kind not in gate.types:
            out.append(f"{reason} {CONDITIONAL}{kind} never sends it; {gate.source})")
        elif gate.prop and gate.prop in values and _off(values[gate.prop]):
            out.append(f"{reason} {CONDITIONAL}sent only with {gate.prop} on, {_plain(values[gate.prop])} here; "
                       f"{gate.source})")
        elif gate.prop:
            out.append(f"{reason} (sent: {gate.prop} is {_plain(values.get(gate.prop, '?'))} here)")
        else:
            out.append(reason)
    return out


def split_conditional(devices: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A prediction's {device: verdict text} -> (the same with conditional V5 notes taken out: "compatible"
    when nothing else is left, {device: its conditional notes})."""
    out: dict[str, str] = {}
    notes: dict[str, str] = {}
    for device, value in devices.items():
        if CONDITIONAL not in value:
            out[device] = value
            continue
        parts = re.split(r";\s*(?=\[[A-Z]\d+\])", value)
        notes[device] = "; ".join(p for p in parts if CONDITIONAL in p)
        out[device] = "; ".join(p for p in parts if CONDITIONAL not in p) or COMPATIBLE
    return out, notes


# --- 2. effective property values under a machine type ------------------------------------------------

#: A bus a device type needs when plugged alone, and the device that brings one (QEMU: "No 'B' bus found").
BUS_PROVIDERS: dict[str, str] = {"usb-bus": "qemu-xhci", "virtio-serial-bus": "virtio-serial-pci",
                                 "SCSI": "virtio-scsi-pci", "HDA": "intel-hda", "floppy-bus": "isa-fdc",
                                 "IndustryPack": "tpci200", "sd-bus": "sdhci-pci", "ccid-bus": "usb-ccid"}
_PROPS_LOCK = threading.Lock()


@dataclass
class MachineProps:
    """What one build says under one machine type: per plugged device type its properties (and its device
    children's), or why it could not be plugged; the devices the machine adds itself; its compat props."""

    machine: str
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # type -> {"props", "children"} | {"error"}
    machine_devices: dict[str, dict[str, list[str]]] | None = None  # type -> prop -> JSON values (instances)
    compat_props: list[dict[str, str]] | None = None  # query-machines compat-props (None: the build lacks it)
    seconds: float = 0.0
    machine_same_as: str = ""  # the newer machine type the machine's own devices were taken from (C1)


@dataclass
class QtreeDevice:
    """One ``dev:`` of ``info qtree``: its type, id, qdev properties (values as QEMU prints them, a number's
    hex or unit aside dropped) and the devices on its buses."""

    type: str
    id: str
    props: dict[str, str] = field(default_factory=dict)
    children: list[QtreeDevice] = field(default_factory=list)

    def descendants(self) -> Iterable[QtreeDevice]:
        for child in self.children:
            yield child
            yield from child.descendants()


_DEV = re.compile(r'^dev: (?P<type>[^,]+), id "(?P<id>[^"]*)"$')
_PROP = re.compile(r"^(?P<name>[\w.\-]+) = (?P<value>.*)$")
_NUMBER = re.compile(r"^(-?\d+) \(.*\)$")


def parse_qtree(text: str) -> list[QtreeDevice]:
    """``info qtree`` -> its top-level devices (nesting by indentation: a device's buses and their devices
    are indented under it). Lines that are not properties (``class ...``, ``bar N``, ``mmio``, ``gpio``)
    are left out."""
    roots: list[QtreeDevice] = []
    stack: list[tuple[int, QtreeDevice]] = []
    for raw in text.splitlines():
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        dev = _DEV.match(line)
        if dev:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            node = QtreeDevice(dev["type"], dev["id"])
            (stack[-1][1].children if stack else roots).append(node)
            stack.append((indent, node))
            continue
        prop = _PROP.match(line)
        if prop and stack and indent > stack[-1][0]:
            while len(stack) > 1 and stack[-1][0] >= indent:
                stack.pop()
            value = prop["value"]
            number = _NUMBER.match(value)
            stack[-1][1].props.setdefault(prop["name"], number.group(1) if number else value)
    return roots


@dataclass
class _Learned:
    """What one binary taught on earlier machine types: the placeholders each type needed, the batch (level)
    each type goes in because it clashes with types of lower levels when plugged together, and per machine
    family the types it refuses however plugged (with QEMU's words), learnt under the family's newest type
    only (an older type's refusal may be its own: 10.0's vmgenid needs the fw_cfg DMA that pc-i440fx-2.4
    lacks). The next machine types start right away: one QEMU per level."""

    extra: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    level: dict[str, int] = field(default_factory=dict)  # absent: level 0, the main batch
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (family, type) -> QEMU's words
    buses: dict[str, str | None] | None = None  # ``-device help``: type -> the bus type it needs
    machines: list[dict[str, Any]] | None = None  # ``query-machines`` with compat-props ([]: before 9.1)
    applies: dict[str, set[str]] | None = None  # a compat entry's qom-type -> every type it applies to
    hinted: set[str] = field(default_factory=set)  # types whose ``extra`` another binary taught (_hint)
    unhinted: set[str] = field(default_factory=set)  # types whose hint failed here: learnt from scratch
    #: (type, property) a backend placeholder gave a type that has no such property (a message that named no
    #: device, "No voice", blamed on it by bisection): taken back, never given to it again (_misplaced)
    lacks: set[tuple[str, str]] = field(default_factory=set)


#: PCI functions the probe places devices at itself (slot, then function; multifunction): slots 0x10-0x1e
#: of the root bus, so that more than 32 PCI types fit and a bus provider QEMU places itself (a low slot)
#: never collides with them.
PCI_SLOTS = range(0x10, 0x1f)
#: Device types per QEMU while a binary learns (its first machine type of a family): each refusal restarts
#: QEMU, with a chunk rather than every type (measured: 115 types per restart made learning half the cold run).
LEARN_CHUNK = 24


def _placement(name: str, index: int, learned: _Learned, machine: str) -> str:
    """``,bus=ROOT,addr=S.F`` for the ``index``-th PCI device of a batch ('' for other buses, or past the
    slots)."""
    if learned.buses is None or learned.buses.get(name) not in ("PCI", "PCIE"):
        return ""
    slot, fn = divmod(index, 8)
    if slot >= len(PCI_SLOTS):
        return ""
    root = "pci.0" if machine == "pc" or machine.startswith("pc-i440fx") else "pcie.0"
    return f",bus={root},addr={PCI_SLOTS[slot]:#x}.{fn}" + (",multifunction=on" if fn == 0 else "")


_LEARNED: dict[str, _Learned] = {}
_LEARNED_LOCK = threading.Lock()


def machine_family(machine: str) -> str:
    """``pc-q35-7.2`` -> ``pc-q35``: the versioned types of one family share their refusals."""
    return re.sub(r"-\d+(\.\d+)*$", "", machine)


def _learned(binary: Path) -> _Learned:
    with _LEARNED_LOCK:
        learned = _LEARNED.setdefault(str(binary), _Learned())
        if learned.buses is None:
            try:
                learned.buses = parse_device_help(_run_qemu(binary, ["-display", "none", "-device", "help"]))
            except ConformanceError:
                learned.buses = {}
        return learned


def _probe(binary: Path, machine: str, types: list[str], folder: Path, facts: MachineProps, *,
           learn: bool = False) -> None:
    """Plug ``types`` (each with placeholders for the backends and buses it insists on) under ``machine``
    and read everything back into ``facts``: one QEMU per level (types that clash with a lower level's go
    one level up, learnt once); a batch QEMU refuses without naming a device is split in halves, each its
    own QEMU. ``learn``: the family's newest type, whose refusals count for the family's other types; it
    plugs LEARN_CHUNK types per QEMU, with the placeholders other binaries learnt for them (_hint)."""
    learned = _learned(binary)
    family = machine_family(machine)
    for name in types:
        if (family, name) in learned.refused and name not in facts.devices:
            facts.devices[name] = {"error": learned.refused[family, name]}
    wanted = [t for t in types if t not in facts.devices]
    for name in wanted:  # a likely refusal alone first: one small QEMU instead of a failed batch and that one
        if _suspect(name, family, _version_of(machine), learn):
            _plug(binary, machine, [name], folder, facts, learned, learned.level.get(name, 0), learn, alone=True)
            if "error" not in facts.devices.get(name, {"error": ""}):
                del facts.devices[name]  # it plugs here: read in its batch, as without the hint
    levels: dict[int, list[list[str]]] = {}
    for t in wanted:
        levels.setdefault(learned.level.get(t, 0), [[]])[0].append(t)
    if learn and levels.get(0) and len(levels[0][0]) > LEARN_CHUNK:
        main = levels[0][0]
        levels[0] = [main[i:i + LEARN_CHUNK] for i in range(0, len(main), LEARN_CHUNK)]
    if not levels and facts.machine_devices is None:
        levels[0] = [[]]  # no type to plug: the bare machine still says what it adds
    while levels:
        level = min(levels)
        for batch in levels.pop(level):  # the batches as without the hints, less what was refused alone
            _plug(binary, machine, [t for t in batch if t not in facts.devices], folder, facts, learned, level, learn)


def _plug(binary: Path, machine: str, pending: list[str], folder: Path, facts: MachineProps, learned: _Learned,
          level: int = 0, learn: bool = False, *, alone: bool = False) -> None:
    """One batch: QEMU started, a refused placeholder supplied, a device that refuses the batch tried alone
    at once (it works alone: it clashes, and goes a level up from now on; it fails alone: QEMU refuses it
    under this machine type), until QEMU starts; then everything read (and what the machine adds, unless
    ``alone``: the batch's QEMU reads that)."""
    while pending or (facts.machine_devices is None and not alone):
        if learn:
            _hint(pending, learned)
        used = {name: learned.extra.get(name) for name in pending}  # the placeholders this QEMU gets
        args = _batch_args(pending, learned, machine)
        try:
            qemu = paused(binary, machine, folder, args, name=f"vmstate properties {machine}")
        except LaunchFailed as exc:
            # a placeholder's line names its owner by number (ipmi-bmc-sim,id=vmsb4 is the 5th device's BMC)
            culprit = _placeholder_owner(exc.stderr_tail, pending) or _culprit(exc.stderr_tail, pending)
            if culprit is None:
                if not pending:  # the bare machine does not start: nothing to read
                    facts.machine_devices = {}
                    return
                if len(pending) == 1:
                    if _unhint(pending[0], learned, used):
                        continue
                    _refuse(pending[0], _reason(exc.stderr_tail, pending[0]), machine, facts, learned, learn)
                    return
                culprit = _first_failing(binary, machine, pending, folder, learned)
            if culprit is None:  # no prefix of the batch fails (QEMU is not consistent): halves, each its own
                half = len(pending) // 2
                _probe(binary, machine, pending[:half], folder, facts, learn=learn)
                _probe(binary, machine, pending[half:], folder, facts, learn=learn)
                return
            why = _reason(exc.stderr_tail, culprit)
            if learned.extra.get(culprit) != used.get(culprit):  # another probe gave it a placeholder meanwhile
                continue  # (judged against that one, QEMU's words about the old argv would read as a refusal)
            if culprit not in learned.hinted and _misplaced(culprit, why, used.get(culprit), learned):
                continue  # (a hint QEMU refuses is dropped whole below: _unhint)
            fix = _placeholder(why, used.get(culprit), {p for t, p in learned.lacks if t == culprit})
            if fix is not None:
                learned.extra[culprit] = fix
                with _HINTS_LOCK:
                    _PLACEHOLDER_HINTS[culprit] = fix
                    if any(o.startswith(UNHINTED) for o in fix[1]):
                        del _PLACEHOLDER_HINTS[culprit]
            elif _unhint(culprit, learned, used):
                continue
            elif len(pending) > 1:  # it may only clash with another one (two IDE units, two VGAs): alone
                pending.remove(culprit)
                _plug(binary, machine, [culprit], folder, facts, learned, level + 1, learn, alone=True)
                if "error" not in facts.devices.get(culprit, {"error": ""}):
                    learned.level[culprit] = max(learned.level.get(culprit, 0), level + 1)
            else:
                _refuse(culprit, why, machine, facts, learned, learn)
                pending.remove(culprit)
            continue
        except LiveError as exc:
            for name in pending:
                facts.devices[name] = {"error": exc.message}
            return
        try:
            qmp = qemu.qmp
            tree = parse_qtree(str(qmp.cmd("human-monitor-command", **{"command-line": "info qtree"})))
            everything = [d for root in tree for d in (root, *root.descendants())]
            ours = {d.id: d for d in everything if re.fullmatch(r"cov\d+|vms[a-z]+\d+", d.id)}
            if facts.machine_devices is None:
                facts.machine_devices = _machine_devices(everything, ours)
                facts.compat_props = _compat_props(qmp, machine, learned)
            for n, name in enumerate(pending):
                dev = ours.get(f"cov{n}")
                if dev is None:  # a device on no bus (vmgenid, vmcoreinfo): info qtree does not list it
                    facts.devices[name] = {"props": {}, "children": {}, "unread": "on no bus: not in info qtree"}
                    continue
                children: dict[str, dict[str, str]] = {}
                for child in dev.descendants():
                    children.setdefault(child.type, child.props)
                facts.devices[name] = {"props": dev.props, "children": children}
        except QmpError as exc:
            for name in pending:
                facts.devices.setdefault(name, {"error": f"QMP: {exc.message}"})
        finally:
            qemu.stop()
        return


#: The placeholders some binary learnt per device type: a hint for the binaries still learning (_hint).
_PLACEHOLDER_HINTS: dict[str, tuple[str, list[str]]] = {}
#: Placeholders never passed on as a hint: without an audiodev a build falls back to a default audio backend,
#: which may work or not, so another build's audiodev could change what this build says, not only what it
#: costs (before "No voice" was read as a missing audiodev, it changed 80 predictions: 5.2's and 7.2's gus).
UNHINTED = ("none,id=vmsa",)


def _hint(pending: list[str], learned: _Learned) -> None:
    """While a binary learns, a type it has no placeholders for gets those another binary learnt for it (a
    drive, a bus, a chassis number are what the type needs in every build): one QEMU instead of one failed
    start per placeholder. A hint that fails is dropped (_unhint) and the type learns from scratch."""
    with _HINTS_LOCK:
        for name in pending:
            if name not in learned.extra and name not in learned.unhinted and name in _PLACEHOLDER_HINTS:
                learned.extra[name] = _PLACEHOLDER_HINTS[name]
                learned.hinted.add(name)


def _unhint(name: str, learned: _Learned, used: dict[str, Any]) -> bool:
    """Drop the hint ``name`` failed with (QEMU refused it with another binary's placeholders: the
    placeholders may be the cause), so that it is tried again with none: True when there was one."""
    if name not in learned.hinted or learned.extra.get(name) != used.get(name):
        return False
    with _HINTS_LOCK:
        learned.extra.pop(name, None)
        learned.hinted.discard(name)
        learned.unhinted.add(name)
    return True


def _batch_args(pending: list[str], learned: _Learned, machine: str) -> list[str]:
    """The options that plug ``pending``, each with its learnt placeholders, PCI types at their own slots."""
    args: list[str] = []
    pci = 0
    for n, name in enumerate(pending):
        suffix, opts = learned.extra.get(name, ("", []))
        args += [a.replace("{n}", str(n)) for a in opts]
        where = _placement(name, pci, learned, machine)
        pci += 1 if where else 0
        args += ["-device", f"{name},id=cov{n}{suffix.replace('{n}', str(n))}{where}"]
    return args


def _first_failing(binary: Path, machine: str, pending: list[str], folder: Path, learned: _Learned) -> str | None:
    """The device whose addition makes the batch fail when QEMU's words name none (5.2 aborts with 'RAMBlock
    "vga.vram" already registered' for a second VGA-class device): the end of the shortest failing prefix,
    found by bisection (a prefix keeps every device's place; about log2(len) QEMUs, once per build: the
    device then goes a level up), or None for a batch of one."""
    lo, hi = 1, len(pending)  # the whole batch failed; the shortest failing prefix is lo..hi devices long
    if hi < 2:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            paused(binary, machine, folder, _batch_args(pending[:mid], learned, machine),
                   name=f"vmstate properties {machine}").stop()
            lo = mid + 1
        except (LaunchFailed, LiveError):
            hi = mid
    return pending[lo - 1]


def _refuse(name: str, why: str, machine: str, facts: MachineProps, learned: _Learned, learn: bool) -> None:
    """QEMU refuses ``name`` alone under ``machine``; under the family's newest type, for the whole family.
    Either is a hint for the probes to come (_suspect)."""
    facts.devices[name] = {"error": why}
    if learn:
        learned.refused[machine_family(machine), name] = why
    with _HINTS_LOCK:
        if learn:
            _REFUSED_NEWEST.add(name)
        else:
            key = (machine_family(machine), name)
            _REFUSED_OLD[key] = max(_REFUSED_OLD.get(key, ()), _version_of(machine))


#: Refusals seen so far, by any build: under a family's newest type (device types), under an older type
#: ((family, device type) -> the newest such type's version). Hints only: which QEMUs run, not what they say.
_REFUSED_NEWEST: set[str] = set()
_REFUSED_OLD: dict[tuple[str, str], tuple[int, ...]] = {}
_HINTS_LOCK = threading.Lock()


def _suspect(name: str, family: str, version: tuple[int, ...], learn: bool) -> bool:
    """Whether ``name`` is likely refused under this machine type, so that it is plugged alone first: while a
    build learns (its family's newest type), a type some build refused under a newest type (a missing
    backend or host device: vfio-pci, the CAN cards); under an older type, a type some build refused under
    this family's type of this version or a newer one (what an old machine type lacks: pc-i440fx-2.4 and
    older have no fw_cfg DMA for vmgenid). A wrong hint costs one small QEMU; the facts are the same either
    way (the alone QEMU is the one a failed batch would have started; a type that plugs alone is read in its
    batch)."""
    with _HINTS_LOCK:
        if learn:
            return name in _REFUSED_NEWEST
        return bool(version) and _REFUSED_OLD.get((family, name), ()) >= version


def _placeholder_owner(stderr: str, pending: list[str]) -> str | None:
    """The device whose placeholder QEMU refused (``-device ipmi-bmc-sim,id=vmsb4``: the 5th device's)."""
    for line in reversed(stderr.splitlines()):
        found = re.search(r"id=(cov|vms[a-z]+)(\d+)\b", line)
        if found:  # the last line naming a device of the batch says whose it is
            n = int(found.group(2))
            return pending[n] if found.group(1) != "cov" and n < len(pending) else None
    return None


def _placeholder(why: str, have: tuple[str, list[str]] | None, lacks: Iterable[str] = ()
                 ) -> tuple[str, list[str]] | None:
    """The suffix and options that give a device what QEMU said it lacks, or None (nothing more to try).
    ``lacks``: properties the device is known not to have (no backend placeholder sets them)."""
    suffix, opts = have or ("", [])
    bus = re.search(r"No '([^']+)' bus found", why)
    if bus and bus.group(1) in BUS_PROVIDERS and not any(o.startswith(BUS_PROVIDERS[bus.group(1)]) for o in opts):
        return suffix, [*opts, "-device", f"{BUS_PROVIDERS[bus.group(1)]},id=vmsbus{{n}}"]
    for pattern, prop, more in BACKEND_PLACEHOLDERS:
        if re.search(pattern, why, re.IGNORECASE) and prop not in suffix and prop.split("=", 1)[0] not in lacks:
            return f"{suffix},{prop}", [*opts, *more]
    return None


def _misplaced(name: str, why: str, used: tuple[str, list[str]] | None, learned: _Learned) -> bool:
    """QEMU says ``name`` has no property a backend placeholder gave it ("Property 'usb-kbd.audiodev' not
    found": 7.2's "No voice" names no device, and the bisection can blame a device before the audio one):
    take that placeholder back, remember the type lacks the property, and say so (True: try again)."""
    found = re.search(r"Property '([^']+)\.([^'.]+)' not found", why)
    if not found or found.group(1) != name or used is None:
        return False
    prop = found.group(2)
    for _pattern, setting, more in BACKEND_PLACEHOLDERS:
        if setting.split("=", 1)[0] == prop and f",{setting}" in used[0]:
            suffix, opts = used[0].replace(f",{setting}", "", 1), list(used[1])
            start = next((i for i in range(len(opts) - len(more) + 1) if opts[i:i + len(more)] == more), None)
            if start is not None:
                del opts[start:start + len(more)]
            learned.extra[name] = (suffix, opts)
            learned.lacks.add((name, prop))
            return True
    return False


def _machine_devices(everything: list[QtreeDevice], ours: dict[str, QtreeDevice]) -> dict[str, dict[str, list[str]]]:
    """Every device the machine adds itself (not plugged by the probe, nor below one it plugged): type ->
    property -> the values its instances have."""
    below = {id(d) for dev in ours.values() for d in (dev, *dev.descendants())}
    out: dict[str, dict[str, set[str]]] = {}
    for dev in everything:
        if id(dev) in below:
            continue
        kind = out.setdefault(dev.type, {})
        for name, value in dev.props.items():
            kind.setdefault(name, set()).add(value)
    return {k: {n: sorted(v) for n, v in props.items()} for k, props in out.items()}


def _compat_props(qmp: Any, machine: str, learned: _Learned | None = None) -> list[dict[str, str]] | None:
    """``query-machines`` compat-props of ``machine`` (None before 9.1). The answer covers every machine type
    (half a megabyte, 0.15 s): asked once per build, kept in ``learned``."""
    machines = learned.machines if learned is not None else None
    if machines is None:
        try:
            machines = qmp.cmd("query-machines", **{"compat-props": True})
        except QmpCommandFailed:
            machines = []  # before 9.1
        if learned is not None:
            learned.applies = _applies(qmp, machines)
            learned.machines = machines
    if not machines or not any("compat-props" in m for m in machines):
        return None
    for m in machines:
        if machine in (m.get("name"), m.get("alias")):
            return [dict(c) for c in m.get("compat-props", [])]
    return []


def _applies(qmp: Any, machines: list[dict[str, Any]]) -> dict[str, set[str]] | None:
    """Every compat entry's qom-type -> the types it applies to (itself, its subtypes, the implementers of an
    interface): ``qom-list-types implements=T abstract=true``, one pipelined round for the build's entries.
    None when the build has no compat-props."""
    kinds = sorted({str(c.get("qom-type")) for m in machines for c in m.get("compat-props", [])})
    if not kinds:
        return None
    replies = qmp.cmd_many([("qom-list-types", {"implements": k, "abstract": True}) for k in kinds])
    return {k: {k} | ({str(t.get("name")) for t in reply} if isinstance(reply, list) else {"*"})
            for k, reply in zip(kinds, replies, strict=True)}


def compat_touched(binary: Path, machine: str, basis: str) -> set[str] | None:
    """The types whose values may differ between two machine types of one build: every type a compat entry
    in one's list and not the other's applies to (``query-machines`` lists each type's entries, inherited
    ones included, so the difference is exactly what sets them apart: C1 in the module docstring); ``*``
    when an entry's type could not be resolved; None when the build cannot say (before 9.1, or not asked
    yet)."""
    learned = _LEARNED.get(str(binary))
    if learned is None or not learned.machines or learned.applies is None:
        return None
    lists = {str(m.get(n)): m.get("compat-props") for m in learned.machines for n in ("name", "alias") if m.get(n)}
    mine, theirs = lists.get(machine), lists.get(basis)
    if mine is None or theirs is None:
        return None
    entry = lambda c: (str(c.get("qom-type")), str(c.get("property")), str(c.get("value")))  # noqa: E731
    differ = {entry(c) for c in mine} ^ {entry(c) for c in theirs}
    return set().union(*(learned.applies.get(kind, {"*"}) for kind, _, _ in differ))


def _placeholder_types(opts: Sequence[str]) -> set[str]:
    """The QOM types a device's placeholders create (``-device isa-fdc,id=...`` -> isa-fdc; ``-object``,
    ``-chardev null`` -> chardev-null)."""
    out = set()
    for option, value in itertools.pairwise(opts):
        kind = value.split(",", 1)[0]
        if option in ("-device", "-object"):
            out.add(kind)
        elif option == "-chardev":
            out.add(f"chardev-{kind}")
    return out


def _derive(facts: MachineProps, basis: MachineProps, touched: set[str], types: list[str],
            learned: _Learned | None = None) -> None:
    """Into ``facts`` (a machine type's), what ``basis`` (another machine type of the same build) read and
    no compat entry that tells the two apart can change (C1): a device type none of whose entries applies to
    it, to its device children, to what its placeholders create (the bus it plugs into: a floppy's
    ``drive-type`` follows its isa-fdc's ``fallback``, which pc-*-2.5 sets) or to any device the machine
    adds itself (the machine's devices are where a device realizes: 10.0's vmgenid refuses pc-i440fx-2.4,
    whose fw_cfg has no DMA); the machine's own devices when none of them is touched. A device ``basis``
    could not plug is probed again. Each copied device names its source (``same_as``)."""
    if "*" in touched:
        return
    machine_types = {_normal_type(k) for k in basis.machine_devices or {}}
    if basis.machine_devices is None or machine_types & {_normal_type(t) for t in touched}:
        return
    facts.machine_devices = basis.machine_devices
    facts.machine_same_as = basis.machine_same_as or basis.machine
    for name in types:
        got = basis.devices.get(name)
        if got is None or "props" not in got or name in facts.devices:
            continue
        around = _placeholder_types(learned.extra.get(name, ("", []))[1]) if learned is not None else set()
        if name in touched or (set(got.get("children", {})) | around) & touched:
            continue
        facts.devices[name] = {**got, "same_as": got.get("same_as", basis.machine)}


def machine_properties(binary: Path, key: str, machine: str, types: Iterable[str], *,
                       root: Path | None = None, learn: bool = False,
                       basis: MachineProps | None = None) -> MachineProps:
    """The build's facts under ``machine`` for these device types, from the cache where it has them
    (per binary content, machine type and device type); then, where the build lists its compat entries,
    what ``basis`` (the facts of a newer machine type of the family) read and the entries that tell the
    two apart cannot change (C1: _derive); the rest is probed, one QEMU per level (``learn``: see _probe)."""
    path = cache_root(root) / "props" / key / f"{machine}.json"
    with _PROPS_LOCK:
        facts = cached_props(path, machine)
    wanted = [t for t in dict.fromkeys(types) if t not in facts.devices]
    if not wanted and facts.machine_devices is not None:
        return facts
    touched = compat_touched(binary, machine, basis.machine) if basis is not None else None
    if basis is not None and touched is not None and facts.machine_devices is None:
        _derive(facts, basis, touched, wanted, _LEARNED.get(str(binary)))
        if facts.machine_devices is not None:
            facts.compat_props = _compat_props(None, machine, _LEARNED.get(str(binary)))
            wanted = [t for t in wanted if t not in facts.devices]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qemu-conformance-vmstate-") as tmp:
        _probe(binary, machine, wanted, Path(tmp), facts, learn=learn)
        if facts.machine_devices is None:  # every type refused: the bare machine still says what it adds
            _probe(binary, machine, [], Path(tmp), facts)
    facts.seconds = round(time.monotonic() - started, 2)
    with _PROPS_LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp_path.write_text(json.dumps({"format": CACHE_FORMAT, "code": RULES_KEY, "devices": facts.devices,
                                        "machine_devices": facts.machine_devices,
                                        "compat_props": facts.compat_props,
                                        "machine_same_as": facts.machine_same_as}))
        tmp_path.replace(path)
    return facts


def cached_props(path: Path, machine: str) -> MachineProps:
    """The facts a props file holds when this code wrote it (its format and RULES_KEY); else none."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") == CACHE_FORMAT and data.get("code") == RULES_KEY:
            return MachineProps(machine, data["devices"], data["machine_devices"], data["compat_props"],
                                machine_same_as=data.get("machine_same_as", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return MachineProps(machine)


# --- 3. one case, one pair, one machine type ----------------------------------------------------------

#: Device types whose sections an older build registers without a device class (so its dump, which lists
#: classes, lacks them): 7.2 made the PS/2 keyboard and mouse devices of their own; before, i8042 registered
#: the same "ps2kbd" and "ps2mouse" sections itself.
SECTIONS_WITHOUT_CLASS: dict[str, str] = {"ps2-kbd": "ps2kbd", "ps2-mouse": "ps2mouse"}

#: Values printed differently that mean the same (rule P1), with the reason.
EQUIVALENT_VALUES: dict[str, tuple[frozenset[str], str]] = {
    "rombar": (frozenset({"1", "-1"}), "rombar became a tri-state in 9.x: -1 (a ROM BAR when the device has a ROM) "
                                       "is what 1 was for a device with its default ROM"),
    "logical_block_size": (frozenset({"0", "512"}), "10.0 prints 0 for 'the backend's size' where 7.2 printed 512: "
                                                    "the same for a 512-byte backend (every case's image)"),
    "physical_block_size": (frozenset({"0", "512"}), "as logical_block_size"),
}


@functools.lru_cache(maxsize=65536)
def _plain(value: str) -> str:
    """A printed value without quotes, booleans spelt one way (5.2 prints "on" where 10.0 prints "true")."""
    value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return {"on": "true", "off": "false"}.get(value, value)


def _off(value: str) -> bool:
    return _plain(value).lower() in {"false", "0", "", "off", "none", "disabled"}


@functools.lru_cache(maxsize=16384)
def not_compared(name: str) -> str | None:
    """Why a property is not compared, or None."""
    if name in NOT_COMPARED:
        return NOT_COMPARED[name]
    return next((why for prefix, why in NOT_COMPARED_PREFIXES.items() if name.startswith(prefix)), None)


def compare_properties(src: dict[str, str], dst: dict[str, str], src_newest: dict[str, str],
                       dst_newest: dict[str, str], *, machine: str, src_label: str, dst_label: str,
                       newer: str = "", dst_compat: set[str] | None = None) -> list[str]:
    """Hazards of one device's property values under ``machine``: P1 both have it, values differ; P2 only the
    destination has it; P3 only the source has it (see the module docstring). ``*_newest``: the values under
    each build's newest machine type of the family; ``newer``: the label of the newer build (P2 and P3 ask
    which build has the property, not which side); ``dst_compat``: the property names the destination's
    machine type's compat entries set, on any type (an entry may name a parent type: ``virtio-pci``);
    None when the build cannot say (before 9.1)."""
    out: list[str] = []
    src, dst, src_newest, dst_newest = (_renamed_props(d, src | dst) for d in (src, dst, src_newest, dst_newest))
    for name in sorted(set(src) | set(dst)):
        if not_compared(name):
            continue
        gate = DEPENDS_ON.get(name)
        if gate and _off(src.get(gate[0], "false")) and _off(dst.get(gate[0], "false")):
            continue
        pinned = "" if dst_compat is None else (
            f" ({dst_label}'s {machine} sets it by a compat entry)" if name in dst_compat
            else f" (no compat entry of {dst_label}'s {machine} names it)")
        if name in src and name in dst:
            a, b = _plain(src[name]), _plain(dst[name])
            same = EQUIVALENT_VALUES.get(name)
            if a != b and not (same and {a, b} <= same[0]):
                out.append(f"[P1] {name}: {a} on {src_label}, {b} on {dst_label} under {machine}{pinned}")
        else:
            mine, newest, label = (dst, dst_newest, dst_label) if name in dst else (src, src_newest, src_label)
            other = src_label if name in dst else dst_label
            value, at_newest = _plain(mine[name]), _plain(newest.get(name, mine[name]))
            if label == newer:  # P2: a property the newer build added
                if value != at_newest or value != "true" or name in KNOWN_EXPOSED:
                    continue  # pinned by the machine type, switched off, or a value the older build hard-coded
                out.append(f"[P2] {name}: only {label} has it, {value} under {machine} as under its newest machine "
                           f"type (nothing keeps {other}'s behaviour){pinned}")
            elif value != at_newest:  # P3: a property the newer build removed, pinned elsewhere here
                out.append(f"[P3] {name}: {label} sets it to {value} under {machine} (its newest machine type: "
                           f"{at_newest}), and {other} has no such property to keep that")
    return out


def _renamed_props(values: dict[str, str], both: dict[str, str]) -> dict[str, str]:
    """``values`` with an old property name turned into its new one (PROPERTY_RENAMES) when the other build
    has the new one."""
    out = dict(values)
    for old, (new, invert, _why) in PROPERTY_RENAMES.items():
        if old in out and new in both and new not in out:
            value = out.pop(old)
            out[new] = {"true": "false", "false": "true"}.get(_plain(value), value) if invert else value
    return out


def _normal_type(name: str) -> str:
    return name.replace(" ", "-")  # QOM type names that lost a space: 5.2's "ICH9 SMB" is 7.2's "ICH9-SMB"


@dataclass
class Side:
    """One build of a pair, as the prediction reads it."""

    binary: Path
    key: str
    label: str  # VERSION-ARCH
    arch: str
    version: Any  # QemuVersion: P2/P3 ask which build is the newer
    dump: dict[str, Any]
    props: Callable[[str, list[str]], MachineProps]  # machine type, device types -> facts
    newest: Callable[[str], str]  # a machine type -> the newest of its family on this build


def case_devices(argv: Sequence[str], substitutes: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """(Memoised) the ``-device`` types of an argv: see _case_devices."""
    return _case_devices(tuple(argv), tuple(sorted((substitutes or {}).items())))


@functools.lru_cache(maxsize=4096)
def _case_devices(argv: tuple[str, ...], substitutes: tuple[tuple[str, str], ...]) -> dict[str, dict[str, str]]:
    """The ``-device`` types of an argv, each with the properties the argv sets on its first instance (a PCI
    host device a case substitutes for counts as its substitute, as in the live run)."""
    from conformance.argv.options import devices

    out: dict[str, dict[str, str]] = {}
    subs = [v for _, v in substitutes]
    for props in devices(list(argv)):
        kind = str(props.get("driver", ""))
        if kind == "vfio-pci" and subs:
            kind, props = subs[0], {k: v for k, v in props.items() if k in ("id", "bus", "addr")}
        set_here = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in props.items() if k != "driver"}
        out.setdefault(kind, set_here)
    return out


def predict(src: Side, dst: Side, machine: str, src_argv: Sequence[str], dst_argv: Sequence[str],
            substitutes: dict[str, str] | None = None) -> dict[str, str]:
    """{device type: "compatible" or the hazards, '; '-joined} of one case migrating from ``src`` to ``dst``
    under ``machine``: the case's -device types, their device children, and what the machine adds."""
    s_devs, d_devs = case_devices(src_argv, substitutes), case_devices(dst_argv, substitutes)
    s_facts = src.props(machine, list(s_devs))
    d_facts = dst.props(machine, list(d_devs | s_devs))
    s_new = src.props(src.newest(machine), list(s_devs))
    d_new = dst.props(dst.newest(machine), list(d_devs | s_devs))
    newer = dst.label if dst.version >= src.version else src.label
    names = None  # the property names the destination's compat entries set, on any type (parents set them too)
    if d_facts.compat_props is not None:
        names = {f"{c.get('qom-type')}.{c.get('property')}".split(".", 1)[1] for c in d_facts.compat_props}
    out: dict[str, str] = {}

    def props_hazards(kind: str, a: dict[str, str], b: dict[str, str], an: dict[str, str], bn: dict[str, str],
                      explicit: tuple[dict[str, str], dict[str, str]] = ({}, {})) -> list[str]:
        a, b = {**a, **explicit[0]}, {**b, **explicit[1]}
        return compare_properties(a, b, an, bn, machine=machine, src_label=src.label, dst_label=dst.label,
                                  newer=newer, dst_compat=names)

    def argv_device(kind: str, argv_props: dict[str, str]) -> str:
        reasons: list[str] = []
        got, other = s_facts.devices.get(kind, {}), d_facts.devices.get(kind, {})
        refused = _refused_here(src, machine, kind, got, s_new.devices.get(kind, {}))
        if refused:  # the source cannot start (as one build with itself: same_build)
            return refused
        if "error" in other and "error" not in got:
            return f"{dst.label} cannot plug it under {machine}: {other['error']}"
        kinds = [kind, *got.get("children", {})]
        values: dict[str, str] = {}  # the source's, for the subsections' gates: children's, the device's, the argv's
        for child_values in got.get("children", {}).values():
            values.update(child_values)
        values.update(got.get("props", {}))
        values.update({k: v for k, v in argv_props.items() if k in values})
        for state in kinds:
            reasons += gate_subsections(_entry(src, dst, state, state == kind or state in other.get("children", {})),
                                        state, values)
        if "props" in got and "props" in other:
            reasons += props_hazards(kind, got["props"], other["props"],
                                     s_new.devices.get(kind, {}).get("props", {}),
                                     d_new.devices.get(kind, {}).get("props", {}),
                                     (_settable(argv_props, got["props"]),
                                      _settable(d_devs.get(kind, {}), other["props"])))
            for child, values in got.get("children", {}).items():
                theirs = other.get("children", {}).get(child)
                if theirs is not None:
                    reasons += [f"{r[:5]}{child}.{r[5:]}" for r in props_hazards(  # "[P1] child.prop: ..."
                        child, values, theirs, s_new.devices.get(kind, {}).get("children", {}).get(child, {}),
                        d_new.devices.get(kind, {}).get("children", {}).get(child, {}))]
        return "; ".join(dict.fromkeys(reasons)) or COMPATIBLE

    for kind, argv_props in s_devs.items():
        memo = (src.key, dst.key, machine, kind, _json_once(argv_props), _json_once(d_devs.get(kind, _NONE)))
        if memo in _MEMO:
            out[kind] = _MEMO[memo]
            continue
        out[kind] = _MEMO[memo] = argv_device(kind, argv_props)
    machine_s = {_normal_type(k): v for k, v in (s_facts.machine_devices or {}).items()}
    machine_d = {_normal_type(k): v for k, v in (d_facts.machine_devices or {}).items()}
    new_s = {_normal_type(k): v for k, v in (s_new.machine_devices or {}).items()}
    new_d = {_normal_type(k): v for k, v in (d_new.machine_devices or {}).items()}
    for kind, values in sorted(machine_s.items()):
        if kind in out:
            continue
        memo = (src.key, dst.key, machine, "", kind)
        if memo in _MEMO:
            out[kind] = _MEMO[memo]
            continue
        if (find_entry(src.dump, kind) is None and kind not in machine_d) or (
                kind not in machine_d and kind in SECTIONS_WITHOUT_CLASS):
            continue  # no state and the destination's machine does not add it, or it sends it without the class
        theirs = machine_d.get(kind)
        reasons = gate_subsections(_entry(src, dst, kind, theirs is not None), kind, _joined(values))
        if theirs is None:
            reasons.append(f"{dst.label}'s {machine} does not add {kind}")
        else:
            reasons += props_hazards(kind, _joined(values), _joined(theirs), _joined(new_s.get(kind, {})),
                                     _joined(new_d.get(kind, {})))
        out[kind] = _MEMO[memo] = "; ".join(dict.fromkeys(reasons)) or COMPATIBLE
    return out


def _entry(src: Side, dst: Side, kind: str, dst_has: bool) -> list[str]:
    """compare_entry once per (source, destination, type, whether the destination has the device)."""
    memo = (src.key, dst.key, "dump", kind, str(dst_has))
    if memo not in _ENTRIES:
        _ENTRIES[memo] = compare_entry(kind, find_entry(src.dump, kind), dst.dump, (kind,) if dst_has else ())
    return list(_ENTRIES[memo])


_ENTRIES: dict[tuple[str, ...], list[str]] = {}


def _more(ready: set[Any], known: int) -> bool:
    return len(ready) > known


def _as_dict(result: Any) -> dict[str, Any]:
    """A StageResult as its JSON line holds it (``StageResult.from_dict`` reads it back), without the deep copy
    of ``dataclasses.asdict`` (which took most of a cold sweep's own time): the details are shared."""
    from dataclasses import asdict, fields

    data = {f.name: getattr(result, f.name) for f in fields(result)}
    for name in ("qemu", "peer"):
        if data[name] is not None:
            data[name] = asdict(data[name])
    data["duration_s"] = round(result.duration_s, 3)
    return data


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


_NONE: dict[str, str] = {}
_JSONS: dict[int, tuple[Any, str]] = {}


def _json_once(value: dict[str, str]) -> str:
    """_json of a case's device settings (case_devices keeps each argv's dicts), once per dict object."""
    have = _JSONS.get(id(value))
    if have is None or have[0] is not value:
        have = _JSONS[id(value)] = (value, _json(value))
    return have[1]


#: Per (source, destination, machine type, device, argv settings): its verdict text (every case shares them).
_MEMO: dict[tuple[str, ...], str] = {}


def _joined(values: dict[str, list[str]]) -> dict[str, str]:
    return {n: "|".join(v) for n, v in values.items()}


def _settable(argv_props: dict[str, str], probed: dict[str, str]) -> dict[str, str]:
    """The argv's settings of properties the device has (libvirt's value wins over the probed default)."""
    return {k: v for k, v in argv_props.items() if k in probed}


# --- 4. the stage ---------------------------------------------------------------------------------------

def _version_of(machine: str) -> tuple[int, ...]:
    """``pc-q35-7.2`` -> (7, 2); () for a type without a version."""
    found = re.search(r"-(\d+(?:\.\d+)*)$", machine)
    return tuple(int(x) for x in found.group(1).split(".")) if found else ()


def make_side(binary: Path, caps: Any, *, root: Path | None = None) -> Side:
    """A build (its binary and capabilities) as the prediction reads it; its dump is asked once (cached)."""
    from conformance.machines import family, versioned

    key = binary_key(binary)
    cache: dict[str, MachineProps] = {}

    def props(machine: str, types: list[str]) -> MachineProps:
        have = cache.get(machine)
        if have is None or any(t not in have.devices for t in types):
            have = cache[machine] = machine_properties(binary, key, machine, types, root=root,
                                                       learn=machine == newest(machine), basis=basis(machine))
        return have

    def basis(machine: str) -> MachineProps | None:
        """The facts read this run under the nearest newer machine type of ``machine``'s family (C1)."""
        mine = _version_of(machine)
        if not mine or machine == newest(machine):
            return None
        fam = machine_family(machine)
        newer = [(v, m) for m in list(cache) if machine_family(m) == fam and (v := _version_of(m)) > mine]
        return cache[min(newer)[1]] if newer else None

    newest_of: dict[str, str] = {}

    def newest(machine: str) -> str:
        if machine not in newest_of:
            fam = family(machine, caps)
            found = versioned(caps, fam) if fam else {}
            newest_of[machine] = max(found, key=lambda n: found[n]) if found else machine
        return newest_of[machine]

    dump = build_dump(binary, caps.arch, key=key, root=root)
    return Side(binary, key, caps.label, caps.arch, caps.version, dump, props, newest)


def vmstate_result(case: Any, source: Any, destination: Any, machine: str, src: Side, dst: Side,
                   src_argv: list[str], dst_argv: list[str], output: Path | None = None) -> Any:
    """The ``vmstate`` result of one case on one ordered pair under one machine type: ``pass`` when every
    device is compatible, ``fail`` naming the hazards otherwise (a known bug of either side's version that
    concerns this argv and machine type explains it, by the one rule: conformance/knownbugs/matcher.py). A
    result with hazards that a known bug of either version could explain keeps both argvs, the machine type
    pinned, under ``output``/argv/vmstate/ (for ``bugs explain``; writing one per failed prediction took
    most of a cached sweep's time)."""
    from conformance.knownbugs.matcher import load_bugs
    from conformance.results.records import StageResult

    started = time.monotonic()
    details: dict[str, Any] = {"machine": machine}
    if src.key == dst.key:  # one binary with itself: the same dump and the same values, by construction
        devices = same_build(src, machine, case_devices(src_argv, case.substitutes))
        details["same_build"] = True
    else:
        devices = predict(src, dst, machine, src_argv, dst_argv, case.substitutes)
    devices, conditional = split_conditional(devices)
    details["devices"] = devices
    if conditional:
        details["conditional"] = conditional
    bad = {k: v for k, v in devices.items() if v != COMPATIBLE}
    verdict = "fail" if bad else "pass"
    reason = ("; ".join(f"{k}: {v}" for k, v in bad.items()) if bad else
              f"{len(devices)} devices compatible under {machine}")
    if conditional:  # a warning: named, not a hazard
        reason += "; conditional, a break only if sent: " + ", ".join(
            f"{k} ({', '.join(_SUBSECTION.findall(v))})" for k, v in conditional.items())
    candidates = bad and any("vmstate" in (*b.stages, *b.reproduce) and any(
        b.first <= c.version <= b.last for c in (source.caps, destination.caps)) for b in load_bugs())
    if candidates:  # the rule's stage and version conditions first: the rest needs the argvs
        pinned = [_with_machine(src_argv, machine), _with_machine(dst_argv, machine)]
        verdict, reason = explain_hazards(bad, reason, source.caps, destination.caps, pinned, details)
    result = StageResult(case=case.name, stage="vmstate", verdict=verdict, reason=reason, arch=source.caps.arch,
                         qemu=source.build, peer=destination.build, duration_s=time.monotonic() - started,
                         details=details)
    if candidates and output is not None:
        result.artifacts.update(_write_argvs(case.name, source, destination, machine, src_argv, dst_argv, output))
    return result


def same_build(side: Side, machine: str, devices: Iterable[str]) -> dict[str, str]:
    """{device type: "compatible" or why the VM cannot start} of one build with itself under ``machine``: the
    state and values are the same on both sides by construction, but a device the build refuses under this
    machine type and plugs under its family's newest (a machine type's compat entry at work: vmgenid without
    fw_cfg DMA, virtio-blk's ``scsi`` under 2.4) makes both sides fail to start. A refusal under the newest
    type too is the probe's (a backend it does not give, such as a 9p fsdev), not the machine type's."""
    kinds = list(devices)
    here, newest = side.props(machine, kinds), side.props(side.newest(machine), kinds)
    return {kind: _refused_here(side, machine, kind, here.devices.get(kind, {}), newest.devices.get(kind, {}))
            or COMPATIBLE for kind in kinds}


def _refused_here(side: Side, machine: str, kind: str, here: dict[str, Any], newest: dict[str, Any]) -> str:
    """"cannot plug it" when ``side`` refuses ``kind`` under ``machine`` (facts ``here``) but plugs it under its
    family's newest type (``newest``): the machine type's doing. "" otherwise (a refusal under every type is the
    probe's: a backend it does not give)."""
    if "error" not in here or "error" in newest or not newest:
        return ""
    return f"{side.label} cannot plug it under {machine}: {here['error']}"


def explain_hazards(bad: dict[str, str], reason: str, source: Any, destination: Any, pinned: list[list[str]],
                    details: dict[str, Any]) -> tuple[str, str]:
    """Each device's hazard on its own through the one known-bug rule (either side's version, with the argvs
    ``pinned`` to the machine type): ``known-bug`` only when every hazard is explained, naming the bugs;
    otherwise ``fail`` naming the hazards left, so that a known bug of one device never hides another's
    break. ``details["explained"]``: {device: bug id}."""
    from conformance.knownbugs.matcher import each_hazard
    from conformance.live.boot import explain

    def attempt(device: str, hazard: str, on: tuple[Any, Any, str, list[str]]) -> dict[str, Any] | None:
        caps, peer, side, argv = on
        found: dict[str, Any] = {}
        verdict, _ = explain("fail", f"{device}: {hazard}", [], caps, "vmstate", found, peer=peer.version,
                             side=side, argv=argv)
        return found["known_bug"] if verdict == "known-bug" else None

    explained, left = each_hazard(bad, ((source, destination, "source", pinned[0]),
                                        (destination, source, "destination", pinned[1])), attempt)
    if not explained:
        return "fail", reason
    details["explained"] = {device: record["id"] for device, record in explained.items()}
    named = ", ".join(f"{device} ({record['id']})" for device, record in explained.items())
    if left:
        return "fail", "; ".join(f"{k}: {bad[k]}" for k in left) + f"; explained by known bugs: {named}"
    records: dict[str, dict[str, Any]] = {}  # every bug that explains a device, each device's primary first
    for record in explained.values():
        for one in (record, *record.get("also", ())):
            records.setdefault(one["id"], {k: v for k, v in one.items() if k != "also"})
    first, *rest = records.values()
    others = [r["id"] for r in rest]
    details["known_bug"] = {**first, "also": rest} if rest else first  # the report and JUnit name each
    also = f"; also explained by {', '.join(others)}" if others else ""
    return "known-bug", f"known bug {first['id']} ({first['title']}; fixed: {first['fixed']}){also}: {reason}"


def _write_argvs(case: str, source: Any, destination: Any, machine: str, src_argv: list[str], dst_argv: list[str],
                 output: Path) -> dict[str, str]:
    """What `bugs explain` reads a pair's argvs from (machine type pinned): {artifact name: path}."""
    artifacts = {}
    for side, caps, argv in (("source", source.caps, src_argv), ("destination", destination.caps, dst_argv)):
        path = output / "argv" / "vmstate" / f"{caps.arch}-{caps.version}" / f"{case}@{machine}.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_with_machine(argv, machine)) + "\n")
        artifacts[f"{side}-argv"] = str(path.relative_to(output))
    return artifacts


def _with_machine(argv: list[str], machine: str) -> list[str]:
    """The argv with its -machine type replaced (what the known-bug rule reads the machine type from)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "-machine":
            value = out[i + 1]
            if value.startswith("{"):
                data = json.loads(value)
                data["type"] = machine
                out[i + 1] = json.dumps(data)
            else:
                rest = value.split(",", 1)
                out[i + 1] = ",".join([machine, *rest[1:]]) if "=" not in rest[0] else f"{machine},{value}"
    return out


def stage_machine(case: Any, source: Any, destination: Any, given: str) -> tuple[str | None, str]:
    """The machine type an item runs under: the given one, else as the migrate stage pins it (the newest
    versioned type both builds have; one build with itself: its own newest)."""
    from conformance.machines import pinned_machine

    base = case.machine_for(source.caps.arch) or ""
    if given:
        missing = [str(c.version) for c in (source.caps, destination.caps) if c.machine(given) is None]
        return (None, f"machine type {given} unknown to QEMU {' and '.join(missing)}") if missing else (given, "")
    return pinned_machine(base, source.caps, destination.caps)


def run_items(items: Sequence[Any], writer: Any, catalogue: Any, say: Say, *, root: Path | None = None,
              jobs: int | None = None) -> list[Any]:
    """Every planned vmstate item (conformance/plan.py) of targets (conformance/live/boot.py Target): the
    builds' facts are asked first, ``jobs`` (build, machine type) probes at a time (default: twice the
    cores: a probe is a short QEMU whose start and QMP round trips leave its core idle part of the time;
    cold sweep on 2 cores at load ~5: 2 jobs 118 s wall, 3 106 s, 4 70 s, 6 96 s, CPU 124-134 s), then
    each item is judged and written."""
    jobs = jobs or 2 * (os.cpu_count() or 1)
    from concurrent.futures import ThreadPoolExecutor

    from conformance.results.records import StageResult
    from conformance.static import StaticRunner

    runner = StaticRunner(catalogue)
    sides: dict[str, Side] = {}
    argvs: dict[tuple[str, str], list[str] | None] = {}

    def side(target: Any) -> Side:
        if target.caps.label not in sides:
            sides[target.caps.label] = make_side(Path(target.binary), target.caps, root=root)
        return sides[target.caps.label]

    def argv(case: Any, target: Any) -> list[str] | None:
        key = (case.name, target.caps.label)
        if key not in argvs:
            outcome = next((o for o in runner.run(case, target.caps) if o.stage == "argv"), None)
            argvs[key] = outcome.argv if outcome is not None and outcome.verdict == "pass" else None
        return argvs[key]

    work = []
    results = []
    for planned in items:
        source, destination = planned.build, planned.peer or planned.build
        machine, why = stage_machine(planned.case, source, destination, planned.item.machine)
        a, b = argv(planned.case, source), argv(planned.case, destination)
        if machine is None or a is None or b is None:
            result = StageResult(case=planned.case.name, stage="vmstate", verdict="skip", arch=source.caps.arch,
                                 qemu=source.build, peer=destination.build,
                                 reason=why or "the argv stage does not build this case on both builds",
                                 details={"machine": planned.item.machine} if planned.item.machine else {})
            writer.write(result)
            results.append(result)
            continue
        work.append((planned, source, destination, machine, a, b))
    # the verdicts an earlier run gave on the same inputs: one file per source build
    inputs = _inputs_key()
    saved: dict[str, dict[str, Any]] = {}
    keys: list[str] = []
    misses = []
    for planned, source, destination, machine, a, b in work:
        s = side(source)
        if s.key not in saved:
            saved[s.key] = _load_results(s.key, inputs, root)
        keys.append(_item_key(planned.case, source, destination, side(destination).key, machine, a, b))
        if keys[-1] not in saved[s.key]:
            misses.append((planned, source, destination, machine, a, b))
    # the facts first, ``jobs`` builds' machine types at a time (each a paused QEMU per level)
    wanted: dict[tuple[str, str], tuple[Side, set[str]]] = {}
    for planned, source, destination, machine, a, b in misses:
        s, d = side(source), side(destination)
        types = set(case_devices(a, planned.case.substitutes)) | set(case_devices(b, planned.case.substitutes))
        for one in {s.key: s, d.key: d}.values():  # one build with itself: what it refuses (same_build)
            for m in (machine, one.newest(machine)):
                wanted.setdefault((one.label, m), (one, set()))[1].update(types)
    # each binary learns first (its placeholders, clashes and refusals) under its families' newest types, one
    # after the other; then every other machine type, ``jobs`` at a time
    learning: dict[str, list[tuple[Side, str, list[str]]]] = {}
    rest = []
    for (_, m), (one, types) in wanted.items():
        todo = (one, m, sorted(types))
        (learning.setdefault(one.label, []) if m == one.newest(m) else rest).append(todo)

    ready: set[tuple[str, str]] = set()  # (build, machine type) whose facts are read
    news = threading.Condition()

    def learn(todos: list[tuple[Side, str, list[str]]]) -> None:
        for one, m, types in todos:
            try:
                one.props(m, types)
            finally:
                with news:
                    ready.add((one.label, m))
                    news.notify_all()

    # what each item waits for: the facts of both builds under its machine type and their families' newest
    needs: list[set[tuple[str, str]]] = []
    for (_planned, source, destination, machine, _, _), key in zip(work, keys, strict=True):
        s, d = side(source), side(destination)
        cached = key in saved[s.key]
        needs.append(set() if cached else {(one.label, m) for one in (s, d) for m in (machine, one.newest(machine))})
    pairs = {(side(s).key, side(d).key) for _, s, d, _, _, _ in misses}
    for pair in pairs:
        _load_memo(pair, root)
    output = writer.path.parent
    changed: set[str] = set()
    judged: dict[int, Any] = {}

    def judge(index: int) -> Any:
        planned, source, destination, machine, a, b = work[index]
        known = saved[side(source).key].get(keys[index])
        if known is not None:
            result = StageResult.from_dict(known)
            if result.artifacts:
                _write_argvs(planned.case.name, source, destination, machine, a, b, output)
            return result
        try:
            result = vmstate_result(planned.case, source, destination, machine, side(source), side(destination),
                                    a, b, output)
        except (ConformanceError, QmpError) as exc:
            return StageResult(case=planned.case.name, stage="vmstate", verdict="error", arch=source.caps.arch,
                               qemu=source.build, peer=destination.build, reason=str(exc),
                               details={"machine": machine})
        result.to_json()  # its one-line reason, the full one kept in details, as written
        saved[side(source).key][keys[index]] = _as_dict(result)
        changed.add(side(source).key)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="vmstate") as pool:
        futures = [pool.submit(learn, todos) for todos in learning.values()]
        for future in futures:
            future.result()
        # a build that lists its compat entries goes down each family from the newest type, one type after the
        # other (each may take what the one above read: C1); another build's types go ``jobs`` at a time
        chains: dict[tuple[str, str], list[tuple[Side, str, list[str]]]] = {}
        for todo in sorted(rest, key=lambda t: _version_of(t[1]), reverse=True):
            one, m, _ = todo
            chain = (one.label, machine_family(m)) if compat_touched(one.binary, m, one.newest(m)) is not None else (
                one.label, m)
            chains.setdefault(chain, []).append(todo)
        futures += [pool.submit(learn, todos) for todos in sorted(chains.values(), key=len, reverse=True)]
        # each item is judged here as soon as its facts are read, while the probes go on
        waiting = list(range(len(work)))
        while waiting:
            with news:
                have = set(ready)
            go = [i for i in waiting if needs[i] <= have]
            if not go and not all(f.done() for f in futures):
                known = len(have)
                with news:
                    news.wait_for(functools.partial(_more, ready, known), timeout=1.0)
                continue
            go = go or waiting  # every probe ended: what is left probes for itself (and says why it cannot)
            taken = set(go)
            waiting = [i for i in waiting if i not in taken]
            for index in go:
                judged[index] = judge(index)
    for future in futures:
        future.result()
    for index, (planned, source, destination, machine, _, _) in enumerate(work):
        result = judged[index]
        writer.write(result)
        results.append(result)
        if result.verdict not in ("pass", "skip"):
            say(f"    vmstate {planned.case.name} {source.caps.label} -> {destination.caps.label} @{machine}: "
                f"{result.verdict.upper()} {result.reason}")
    for pair in pairs:
        _save_memo(pair, root)
    for key in changed:
        _save_results(key, inputs, saved[key], root)
    return results


#: The code's own version: this module's text (the rules and the probe) and conformance/coverage.py's (the
#: paused QEMUs and how a refusal is read). Saved verdicts and device readings of other code are not read: a
#: reading cached by the probe before a fix hands out its old answer (docs/machines.md: 66 false gus fails).
RULES_KEY = hashlib.sha256(Path(__file__).read_bytes() + Path(coverage_module.__file__).read_bytes()).hexdigest()[:12]
_SEP = "\x1f"


def _memo_path(pair: tuple[str, str], root: Path | None) -> Path:
    return cache_root(root) / "verdicts" / f"{pair[0]}-{pair[1]}-{RULES_KEY}.json"


def _load_memo(pair: tuple[str, str], root: Path | None) -> None:
    """The per-device verdicts of an earlier run for this pair of binaries (same rules), into the memo."""
    try:
        data = json.loads(_memo_path(pair, root).read_text())
    except (OSError, ValueError):
        return
    for key, value in data.get("devices", {}).items():
        _MEMO.setdefault(tuple(key.split(_SEP)), value)
    for key, value in data.get("dumps", {}).items():
        _ENTRIES.setdefault(tuple(key.split(_SEP)), value)


def _inputs_key() -> str:
    """What a verdict depends on besides the two builds and the item: the rules (this module's text), the
    known bugs (every layer's, as loaded) and the code that matches them."""
    import inspect

    from conformance.knownbugs import matcher
    from conformance.live.boot import explain

    digest = hashlib.sha256(RULES_KEY.encode())
    digest.update(repr(matcher.load_bugs()).encode())
    digest.update(Path(matcher.__file__).read_bytes())
    digest.update(inspect.getsource(explain).encode())
    return digest.hexdigest()[:12]


def _item_key(case: Any, source: Any, destination: Any, dst_key: str, machine: str, src_argv: list[str],
              dst_argv: list[str]) -> str:
    """One item's inputs: the case, both builds (the binaries' content, as the results name them), the machine
    type and both argvs."""
    data = [case.name, sorted((case.substitutes or {}).items()), _digest(source.build), _digest(destination.build),
            dst_key, machine, _digest(src_argv), _digest(dst_argv)]
    return hashlib.sha256(_json(data).encode()).hexdigest()[:24]


_DIGESTS: dict[Any, tuple[Any, str]] = {}


def _digest(value: Any) -> str:
    """A build's record (by its fields) or an argv (by the list object), hashed once (every machine type of a
    case's pair shares them: hashing each item's argvs anew was most of a cached sweep's stage)."""
    from dataclasses import asdict, is_dataclass

    record = is_dataclass(value) and not isinstance(value, type)
    memo = (type(value).__name__, *vars(value).values()) if record else id(value)
    have = _DIGESTS.get(memo)
    if have is not None and (record or have[0] is value):
        return have[1]
    digest = hashlib.sha256(_json(asdict(value) if record else value).encode()).hexdigest()[:24]
    _DIGESTS[memo] = (value, digest)
    return digest


def _results_path(key: str, inputs: str, root: Path | None) -> Path:
    return cache_root(root) / "results" / f"{key}-{inputs}.json"


def _load_results(key: str, inputs: str, root: Path | None) -> dict[str, Any]:
    """The results of an earlier run with this source binary on the same inputs: {item key: result}."""
    try:
        return dict(json.loads(_results_path(key, inputs, root).read_text()))
    except (OSError, ValueError):
        return {}


def _save_results(key: str, inputs: str, results: dict[str, Any], root: Path | None) -> None:
    path = _results_path(key, inputs, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(results))
    tmp.replace(path)


def _save_memo(pair: tuple[str, str], root: Path | None) -> None:
    mine = lambda memo: {_SEP.join(k): v for k, v in memo.items() if k[:2] == pair}  # noqa: E731
    path = _memo_path(pair, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps({"devices": mine(_MEMO), "dumps": mine(_ENTRIES)}))
    tmp.replace(path)
