"""Which accelerator live stages use: KVM only when a real guest boots under it.

/dev/kvm alone is not evidence: on these machines it is a nested "PVM"
hypervisor that accepts ``-accel kvm`` and fails Linux guests minutes later
(../shared/research/live-lab.md). The decision, in order:

1. QEMU_CONFORMANCE_ACCEL=kvm|tcg forces it (recorded as forced);
2. no usable /dev/kvm -> TCG;
3. /sys/module/kvm_pvm present -> TCG (known to fail Linux guests);
4. a bounded real boot probe (the test guest under ``-accel kvm`` must report
   within the timeout) -> KVM if it does, else TCG.

The answer of step 4 is cached per host boot (boot_id) in the cache folder,
so the probe runs once per machine start, not once per run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.paths import cache_dir
from conformance.qemu.host import host_boot_key, kvm_openable

if TYPE_CHECKING:
    from conformance.live.guest import Guest

PVM_MODULE = Path("/sys/module/kvm_pvm")


@dataclass(frozen=True)
class AccelDecision:
    accel: str  # "kvm" or "tcg"
    reason: str


def decide_accel(boot_probe: Callable[[], tuple[bool, str]] | None = None, *, cache: Path | None = None,
                 use_cache: bool = True) -> AccelDecision:
    """The accelerator for live stages on this host, and why.

    ``boot_probe`` boots the test guest under KVM and returns (booted, detail);
    without one, a host that passes steps 1-3 is assumed to have working KVM.
    """
    forced = os.environ.get("QEMU_CONFORMANCE_ACCEL", "").strip()
    if forced in ("kvm", "tcg"):
        return AccelDecision(forced, f"forced by QEMU_CONFORMANCE_ACCEL={forced}")
    if not kvm_openable():
        return AccelDecision("tcg", "no usable /dev/kvm")
    if PVM_MODULE.exists():
        return AccelDecision("tcg", f"/dev/kvm is a nested PVM hypervisor ({PVM_MODULE} exists): "
                                    "Linux guests fail under it")
    if boot_probe is None:
        return AccelDecision("kvm", "/dev/kvm usable (no boot probe run)")
    path = (cache or cache_dir()) / "accel.json"
    key = host_boot_key()
    if use_cache:
        try:
            stored = json.loads(path.read_text())
            if stored.get("host") == key:
                return AccelDecision(stored["accel"], stored["reason"] + " (cached for this host boot)")
        except (OSError, ValueError, KeyError):
            pass
    booted, detail = boot_probe()
    decision = (AccelDecision("kvm", f"KVM boot probe: {detail}") if booted
                else AccelDecision("tcg", f"KVM boot probe failed: {detail}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"host": key, **asdict(decision)}))
    tmp.replace(path)
    return decision


KVM_PROBE_TIMEOUT = 25.0  # s: a working KVM boots the test guest in ~1 s; the PVM one prints nothing for minutes


def kvm_boot_probe(binary: Path, guest: Guest, timeout: float = KVM_PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot the test guest under -accel kvm; (True, detail) when its boot report arrives in time."""
    import tempfile
    import time

    from conformance.live.guest_report import ReportReader
    from conformance.qemu.process import QemuProcess

    machine = "virt,gic-version=host" if guest.arch == "aarch64" else "q35"
    with tempfile.TemporaryDirectory(prefix="qemu-conformance-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        args = ["-machine", machine, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot", "-serial", f"file:{console}", *guest.boot_args()]
        reader = ReportReader()
        with QemuProcess(binary, args, tmp, name="kvm boot probe", qmp=False) as qemu:
            started = time.monotonic()
            booted = reader.wait_file(console, lambda r: r.boot_ok, timeout=timeout, alive=qemu.is_running)
            took = time.monotonic() - started
            if booted:
                return True, f"the test guest booted under KVM in {took:.1f} s"
            if not qemu.is_running():
                return False, f"QEMU {qemu.exit.describe()}: {qemu.stderr_tail(1)}"
            return False, f"no guest report under KVM in {timeout:g} s"
