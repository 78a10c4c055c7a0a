"""Reading a built argv back: option/value pairs and -device properties (JSON or comma syntax).

Used to check an argv against the capabilities (device_types.py) and to adapt it for a live run
(conformance/live/adapt.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# one encoder for every compact JSON option value (json.dumps with separators builds a new one per call)
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: Any) -> str:
    """A JSON option value as libvirt writes it: no spaces (json.dumps(value, separators=(",", ":")))."""
    return _COMPACT.encode(value)


def escape_opt_value(value: object) -> str:
    """A value for QEMU's ``key=value,key=value`` option syntax: a comma is written doubled.

    Every path or other user-chosen string put into a comma-syntax option goes through this
    (libvirt's virQEMUBuildBufferEscapeComma); ``split_opts``/``parse_props`` undo it. JSON
    options (-blockdev, and -device/-netdev/-object as JSON) need no escaping.
    """
    return str(value).replace(",", ",,")


def parse_props(value: str) -> dict[str, Any]:
    """A -device/-netdev/-chardev value, JSON or comma syntax ('driver,k=v'), as a dict.

    In comma syntax the leading bare word (no "=") is the driver, key "driver" (for -chardev
    and -netdev: the backend type); ",," is a literal comma. The inverse of format_props.
    """
    if value.startswith("{"):
        return json.loads(value)
    props: dict[str, Any] = {}
    for index, part in enumerate(split_opts(value)):
        key, sep, val = part.partition("=")
        if not sep and index == 0:
            props["driver"] = key
        else:
            props[key] = val if sep else "on"
    return props


def split_opts(value: str) -> Iterator[str]:
    """'a,,b,k=v' -> 'a,b', 'k=v': the comma-syntax items, doubled commas undone (see escape_opt_value)."""
    if ",," not in value:  # no escaped comma (the usual case): every comma separates
        yield from value.split(",")
        return
    part = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == ",":
            if value[i + 1:i + 2] == ",":
                part.append(",")
                i += 2
                continue
            yield "".join(part)
            part = []
        else:
            part.append(ch)
        i += 1
    yield "".join(part)


def format_props(props: dict[str, Any], like: str, head_key: str = "driver") -> str:
    """props back into the syntax of ``like`` (JSON when it was JSON, else comma syntax, values escaped)."""
    if like.startswith("{"):
        return compact_json(props)
    head = escape_opt_value(props[head_key])
    rest = []
    for key, value in props.items():
        if key == head_key:
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        rest.append(f"{key}={escape_opt_value(value)}")
    return ",".join([head, *rest])


def options(argv: list[str]) -> Iterator[tuple[int, str, str | None]]:
    """(index, option, value) over argv[1:], pairing options with their value."""
    i = 1
    while i < len(argv):
        opt = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
        yield i, opt, value
        i += 2 if value is not None else 1


def devices(argv: list[str]) -> list[dict[str, Any]]:
    """Every -device of an argv as a dict (driver, id, bus, addr, ...)."""
    return [parse_props(value) for _, opt, value in options(argv) if opt == "-device" and value]
