"""The stored fixtures in capsdata/: listing, loading, resolving a caps argument.

A caps argument on the command line is one of
- a fixture file of this project (``capsdata/qemu-4.2.0-x86_64.xml``),
- a libvirt capability XML (imported on the fly),
- ``VERSION:ARCH`` resolved in capsdata/ (``4.2.0:x86_64``, ``7.2:x86_64`` takes the
  highest 7.2.x, ``latest:aarch64`` the highest version).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from conformance.caps.fixture import read_fixture
from conformance.caps.model import Capabilities, QemuVersion
from conformance.data import fixture_dirs
from conformance.errors import FixtureError
from conformance.paths import capsdata_dir

_NAME_RE = re.compile(r"^qemu-(\d+\.\d+\.\d+)-([a-z0-9_]+)\.xml$")


def fixture_files(folder: Path | None = None) -> list[Path]:
    """capsdata/*.xml sorted by arch, then version: of ``folder``, or of every data layer (conformance/data.py;
    an upper layer's file of the same name wins)."""
    by_name: dict[str, Path] = {}
    for where in [folder] if folder else fixture_dirs():
        by_name.update((p.name, p) for p in where.glob("qemu-*.xml"))
    found = []
    for path in by_name.values():
        m = _NAME_RE.match(path.name)
        if m:
            found.append((m[2], QemuVersion.parse(m[1]), path))
    return [p for _, _, p in sorted(found)]


@lru_cache(maxsize=256)
def _load_cached(path: str, mtime: float) -> Capabilities:
    return read_fixture(path)


def load(path: str | Path) -> Capabilities:
    """Read a fixture, cached per file and modification time (the static matrix loads each once)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return read_fixture(p)  # raises the clear not-found error
    return _load_cached(str(p), mtime)


def resolve(spec: str, folder: Path | None = None) -> Capabilities:
    """A caps argument -> Capabilities (see the module docstring)."""
    path = Path(spec)
    if path.suffix == ".xml" or path.exists():
        if not path.exists():
            raise FixtureError("capability fixture not found", path=path,
                               hint="see `qemu-conformance caps list`")
        head = path.read_bytes()[:400]
        if b"<qemuCaps" in head:
            from conformance.caps.libvirt_import import import_libvirt_caps

            return import_libvirt_caps(path)
        return load(path)
    version_text, sep, arch = spec.partition(":")
    if not sep or not arch:
        raise FixtureError(f"cannot resolve capabilities {spec!r}",
                           hint="give a fixture file, a libvirt caps XML or VERSION:ARCH such as 4.2.0:x86_64")
    candidates = []
    for p in fixture_files(folder):
        m = _NAME_RE.match(p.name)
        assert m
        if m[2] != arch:
            continue
        if version_text in ("latest", m[1]) or m[1].startswith(version_text + "."):
            candidates.append((QemuVersion.parse(m[1]), p))
    if not candidates:
        known = ", ".join(f"{_NAME_RE.match(p.name)[1]}:{_NAME_RE.match(p.name)[2]}"  # type: ignore[index]
                          for p in fixture_files(folder))
        raise FixtureError(f"no stored fixture for {spec}", path=folder or capsdata_dir(),
                           hint=f"stored: {known or 'none'}")
    return load(max(candidates)[1])
