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


def syntax_flags(caps: Capabilities) -> tuple[bool, bool]:
    """All that qemu_args_for reads of the capabilities when it succeeds: whether -device and -object take JSON
    (flags device.json, object.qapified); an error also names the version."""
    return caps.has("device.json"), caps.has("object.qapified")


def qemu_args_for(entries: list[Any], caps: Capabilities, *, where: str, case_name: str = "") -> list[str]:
    """A case's ``qemu_args`` (its <qemu:commandline>) written for these capabilities. A ``-device`` value
    written as JSON stays JSON on builds that take JSON ``-device`` (flag device.json) and is written in
    comma syntax on the others; ``-object`` the same by flag object.qapified. Every build gets the same
    devices: a migration between two builds needs them on both sides (a device some builds lack goes in a
    case whose ``needs`` say so, which the planner checks on both)."""
    json_device, json_object = syntax_flags(caps)
    syntax = {"-device": ("driver", json_device), "-object": ("qom-type", json_object)}
    args: list[str] = []
    for entry in entries:
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
    return args
