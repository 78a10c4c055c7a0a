"""`qemu-conformance argv DOMAIN.xml --caps CAPS [--json]`."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from conformance.caps.model import Capabilities, QemuVersion
from conformance.errors import DomainInvalid

_LIBVIRT_CAPS_RE = re.compile(r"^caps_(\d+\.\d+\.\d+)_([a-z0-9_]+?)(\+[\w-]+)?\.xml$")


def strip_machine_aliases(caps: Capabilities) -> Capabilities:
    """Every alias becomes a machine of its own (libvirt's virQEMUCapsStripMachineAliases)."""
    machines = [replace(m, alias=None) for m in caps.machines]
    machines += [replace(m, name=m.alias, alias=None, is_default=False) for m in caps.machines if m.alias]
    return replace(caps, machines=tuple(machines))


def is_libvirt_latest_fixture(path: Path) -> bool:
    """libvirt's test harness strips machine aliases from its newest fixture per arch ("latest").

    Only the caps_VERSION_ARCH.xml layout (libvirt >= 9.x tests) says which file is the newest.
    """
    m = _LIBVIRT_CAPS_RE.match(path.name)
    if not m:
        return False
    mine = QemuVersion.parse(m[1])
    for other in path.parent.glob(f"caps_*_{m[2]}*.xml"):
        o = _LIBVIRT_CAPS_RE.match(other.name)
        if o and o[2] == m[2] and QemuVersion.parse(o[1]) > mine:
            return False
    return True


@lru_cache(maxsize=64)
def load_caps(spec: str) -> Capabilities:
    from conformance.caps.store import resolve

    caps = resolve(spec)
    path = Path(spec)
    if path.suffix == ".xml" and caps.provenance.source == "libvirt-import" and is_libvirt_latest_fixture(path):
        caps = strip_machine_aliases(caps)
    return caps


def argv_for_file(domain_path: Path, caps_spec: str) -> list[str]:
    from conformance.pipeline import domain_argv, parse_xml

    try:
        data = domain_path.read_bytes()
    except FileNotFoundError:
        raise DomainInvalid("domain XML not found", path=domain_path) from None
    except OSError as exc:
        raise DomainInvalid(f"cannot read domain XML: {exc.strerror}", path=domain_path) from None
    caps = load_caps(caps_spec)
    domain, _ = parse_xml(data, str(domain_path), schema=False)  # libvirt's corpus: fast, schema-checked there
    return domain_argv(domain, caps)


def format_args(argv: list[str]) -> str:
    """One option per line with ` \\` continuations, like libvirt's .args files."""
    lines: list[str] = []
    i = 0
    while i < len(argv):
        item = shlex.quote(argv[i])
        if i > 0 and argv[i].startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            item += " " + shlex.quote(argv[i + 1])
            i += 1
        lines.append(item)
        i += 1
    return " \\\n".join(lines) + "\n"


def cli_argv(args: argparse.Namespace) -> int:
    if getattr(args, "schema_coverage", None):
        from conformance.argv.schema_coverage import coverage, format_table

        print(format_table(coverage(), only=args.schema_coverage))
        return 0
    if args.domain is None or args.caps is None:
        raise DomainInvalid("argv needs a domain XML and --caps", hint="qemu-conformance argv DOMAIN.xml --caps "
                            "latest:x86_64, or argv --schema-coverage")
    argv = argv_for_file(Path(args.domain), str(args.caps))
    if args.json:
        print(json.dumps(argv))
    else:
        print(format_args(argv), end="")
    return 0
