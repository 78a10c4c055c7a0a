"""Where the suite finds its data and keeps its caches.

Settings (environment variables):
  QEMU_CONFORMANCE_DATA    data folders (``:``-separated) layered over the packaged data:
                           fixtures, cases, known bugs (conformance/data.py, docs/data.md)
  QEMU_CONFORMANCE_CACHE   cache root (default: $XDG_CACHE_HOME/qemu-conformance,
                           i.e. ~/.cache/qemu-conformance)
  QEMU_CONFORMANCE_BUILDS  folder of extra QEMU builds unpacked beside the host's
                           (default: <cache root>/builds); see conformance/builds.py
  QEMU_CONFORMANCE_SHARED  reference data beside the checkout (default: ../shared)

Every path the suite is given, on the command line or in a setting, may be
relative: it is made absolute once, where it is read (``absolute``,
``env_path``), against the working folder of that moment. The rest of the code
only sees absolute paths, so a QEMU started in its VM folder, or libvirt's
schema (which rejects relative ``<source file=...>``), never gets a relative one.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def absolute(value: str | os.PathLike[str]) -> Path:
    """``value`` as an absolute path against the current working folder.

    Path.absolute(), not resolve(): a user's symlinked folder stays as they named it, and
    nothing needs to exist yet. Also the ``type=`` of every path option of the command line.
    """
    return Path(value).absolute()


def env_path(name: str) -> Path | None:
    """The path setting ``name`` made absolute; None when it is unset or empty."""
    value = os.environ.get(name)
    return absolute(value) if value else None


def env_paths(name: str) -> tuple[Path, ...] | None:
    """A colon-separated list of paths (like $PATH), each made absolute; None when unset or empty."""
    value = os.environ.get(name)
    return tuple(absolute(p) for p in value.split(":") if p) if value else None


def xdg_dir(name: str, default: str) -> Path:
    """$XDG_CACHE_HOME and friends: the XDG spec says to ignore a relative value; else ~/DEFAULT."""
    value = os.environ.get(name)
    return Path(value) if value and os.path.isabs(value) else Path.home() / default


def project_dir() -> Path:
    """The base data layer's folder: the checkout, or the installed package's data (conformance/data.py)."""
    from conformance.data import base_layer

    return base_layer().root


def capsdata_dir() -> Path:
    """The base layer's capsdata/ (where `caps import --capsdata` writes); reading goes over every layer."""
    return project_dir() / "capsdata"


def templates_dir() -> Path:
    """The base layer's templates/; reading goes over every layer (conformance/data.py)."""
    return project_dir() / "templates"


def shared_dir() -> Path:
    """../shared beside the checkout: reference data (libvirt corpus, research)."""
    return env_path("QEMU_CONFORMANCE_SHARED") or PACKAGE_DIR.parent.parent / "shared"


def libvirt_corpus_dir() -> Path:
    """libvirt's whole x86_64/aarch64 test corpus (the curated one is a subset of it)."""
    return shared_dir() / "peer" / "libvirt-corpus-wide"


def cache_dir() -> Path:
    return env_path("QEMU_CONFORMANCE_CACHE") or xdg_dir("XDG_CACHE_HOME", ".cache") / "qemu-conformance"


def builds_dir() -> Path:
    return env_path("QEMU_CONFORMANCE_BUILDS") or cache_dir() / "builds"
