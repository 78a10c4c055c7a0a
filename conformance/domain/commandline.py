"""A case's extra QEMU arguments (its ``qemu_args``, the domain's <qemu:commandline>) for one build.

QEMU creates every comma-syntax ``-device`` before all JSON ones, whatever their order on the command
line, and libvirt writes its own devices as JSON exactly when the build takes JSON ``-device`` (flag
device.json, QEMU 7.0+). So a case's extra devices, which often sit on a bus libvirt's devices bring, are
JSON on such a build and comma syntax, after libvirt's, on an older one: either way QEMU creates them
after their bus. Cases write them once, as JSON; this module writes them as each build needs.
"""

from __future__ import annotations

import json
from typing import Any

from conformance.argv.options import format_props
from conformance.caps.model import Capabilities
from conformance.errors import CaseError


def qemu_args_for(entries: list[Any], caps: Capabilities, *, where: str, case_name: str = ""
                  ) -> tuple[list[str], list[str]]:
    """A case's ``qemu_args`` (its <qemu:commandline>) for these capabilities: (the arguments, the QOM types
    and flags whose group was left out).

    An entry is an argument, or a group ``{ needs_types = [TYPE...], needs = [FLAG...], args = [...] }`` kept
    only when the build has every type and capability flag (a device some builds lack, or cannot run, in a
    case the others run whole). A ``-device`` value
    written as JSON stays JSON on builds that take JSON ``-device`` (flag device.json) and is written in
    comma syntax on the others; ``-object`` the same by flag object.qapified. QEMU creates every
    comma-syntax ``-device`` before the JSON ones whatever their order, and libvirt writes its own devices as
    JSON exactly when the build has device.json: so the extras are JSON there and comma syntax, after
    libvirt's, elsewhere, and either way are created after the buses libvirt's devices bring."""
    syntax = {"-device": ("driver", caps.has("device.json")), "-object": ("qom-type", caps.has("object.qapified"))}
    args: list[str] = []
    left_out: list[str] = []
    for entry in entries:
        if isinstance(entry, dict):
            unknown = set(entry) - {"needs_types", "needs", "args"}
            if unknown or not isinstance(entry.get("args"), list):
                raise CaseError(f"case {case_name}: qemu_args group {entry!r} is not a group", path=where,
                                hint="write { needs_types = [TYPE...], needs = [FLAG...], args = [...] }")
            lacking = [t for t in entry.get("needs_types", []) if not caps.has_type(t)]
            lacking += [f for f in entry.get("needs", []) if not caps.has(f)]
            if lacking:
                left_out += lacking
                continue
            group, inner = qemu_args_for(entry["args"], caps, where=where, case_name=case_name)
            args += group
            left_out += inner
            continue
        value = str(entry)
        head_key, json_ok = syntax.get(args[-1] if args else "", ("", True))
        if not json_ok and value.startswith("{"):
            try:
                props = json.loads(value)
            except ValueError as exc:
                raise CaseError(f"case {case_name}: qemu_args: {args[-1]} {value}: not JSON ({exc})",
                                path=where) from None
            nested = [k for k, v in props.items() if isinstance(v, (dict, list))]
            if head_key not in props or nested:
                raise CaseError(f"case {case_name}: qemu_args: {args[-1]} {value} has no comma-syntax form",
                                path=where, hint=f"QEMU {caps.version} needs one: give it a {head_key!r} and "
                                "only plain values")
            value = format_props(props, "", head_key=head_key)
        args.append(value)
    return args, left_out
