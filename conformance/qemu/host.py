"""Facts about the host that decide how QEMU runs here."""

from __future__ import annotations

import os
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
