"""Facts about the host that decide how QEMU runs here."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def kvm_openable() -> bool:
    """Whether /dev/kvm can be opened read-write (not whether guests work under it)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def host_boot_key() -> str:
    """This host and this boot of it: a cached host fact is valid while the key is the same."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{os.uname().nodename}-{os.uname().release}-{boot}"


@lru_cache(maxsize=32)
def package_version(binary: str | None, qemu_package: str = "") -> str:
    """The distribution package version of a QEMU build, as a ``fixed_in_packages`` entry of a known bug names it
    ("1:7.2+dfsg-7+deb12u18"): dpkg's version of the installed package that owns ``binary`` (``dpkg-query -S``,
    then ``-W``); else the version in QEMU's own package string (``qemu_package``, "Debian 1:10.0.2+ds-2", which
    Debian's builds carry, unpacked or not); '' when neither says."""
    if binary and shutil.which("dpkg-query"):
        real = os.path.realpath(binary)
        for path in dict.fromkeys((binary, real)):
            owner = _dpkg_query("-S", path)
            name = owner.split(":", 1)[0].strip() if owner and ", " not in owner.split(":", 1)[0] else ""
            if name:
                version = _dpkg_query("-W", "-f", "${Version}", name)
                if version:
                    return version
    words = qemu_package.strip().strip("()").split()
    return words[-1] if len(words) == 2 and words[0] == "Debian" and words[1][:1].isdigit() else ""


def _dpkg_query(*args: str) -> str:
    try:
        done = subprocess.run(["dpkg-query", *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
