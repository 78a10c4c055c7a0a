"""Where the suite finds its data and keeps its caches.

Settings (environment variables):
  QEMU_CONFORMANCE_DATA    project folder holding capsdata/ and templates/
                           (default: the source checkout this package runs from)
  QEMU_CONFORMANCE_CACHE   cache root (default: $XDG_CACHE_HOME/qemu-conformance,
                           i.e. ~/.cache/qemu-conformance)
  QEMU_CONFORMANCE_BUILDS  folder of extra QEMU builds unpacked beside the host's
                           (default: <cache root>/builds); see conformance/builds.py
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The folder with capsdata/ and templates/ (a source checkout)."""
    env = os.environ.get("QEMU_CONFORMANCE_DATA")
    return Path(env) if env else PACKAGE_DIR.parent


def capsdata_dir() -> Path:
    return project_dir() / "capsdata"


def templates_dir() -> Path:
    return project_dir() / "templates"


def shared_dir() -> Path:
    """../shared beside the checkout: reference data (libvirt corpus, research)."""
    return Path(os.environ.get("QEMU_CONFORMANCE_SHARED", project_dir().parent / "shared"))


def libvirt_corpus_dir() -> Path:
    return shared_dir() / "peer" / "libvirt-corpus"


def cache_dir() -> Path:
    env = os.environ.get("QEMU_CONFORMANCE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "qemu-conformance"


def builds_dir() -> Path:
    env = os.environ.get("QEMU_CONFORMANCE_BUILDS")
    return Path(env) if env else cache_dir() / "builds"
