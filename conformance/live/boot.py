"""The boot stage: a case's domain, on a real QEMU, with the test guest; checked from inside.

For one case and one QEMU binary: render the domain for that binary's probed
capabilities (disk images and sockets live in the VM's private folder),
build the argv exactly as the static stage does, adapt it for a live run
(conformance/live/adapt.py, every change recorded), boot, wait for the
guest's report, then check it against the devices QEMU was given
(conformance/live/checks.py) and cross-check over QMP. A QEMU that dies, a
guest that panics or never reports, is a result with its evidence (exit code
or signal, stderr tail, serial log, QMP transcript), matched against the
known-bugs database.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.argv.options import devices
from conformance.caps.model import Capabilities, QemuVersion
from conformance.cases import Case, Catalogue, plan
from conformance.errors import ConformanceError, LiveError
from conformance.knownbugs.matcher import AVAILABLE_FEATURES, Facts, expected_bugs, explain_failure, fixed_by_package
from conformance.live.accel import AccelDecision
from conformance.live.adapt import LiveArgv, NeedsHardware, adapt_for_live
from conformance.live.checks import (
    MachineFacts,
    check_drivers_bound,
    check_report,
    failover_pairs,
    failover_team_enslaved,
)
from conformance.live.guest import Guest, build_guest
from conformance.live.vm import GuestVm
from conformance.qemu.host import package_version
from conformance.qemu.process import LaunchFailed
from conformance.qemu.qmp import QmpError
from conformance.results.records import QemuBuild, StageResult

BOOT_TIMEOUT = 60.0  # s to the guest's boot report; measured 2-6 s under TCG, more on a loaded 2-core CI
NEGOTIATION_TIMEOUT = 20.0  # s from boot to FAILOVER_NEGOTIATED (measured 3.6-4.5 s after cont)
DISK_SIZE = "64M"


@dataclass
class Target:
    """One QEMU binary under test, probed, with the accelerator and guest for its arch."""

    binary: Path
    caps: Capabilities
    accel: AccelDecision
    guest: Guest | None
    guest_problem: str = ""  # why there is no guest (the boot stage then skips)

    @property
    def build(self) -> QemuBuild:
        return QemuBuild(str(self.binary), str(self.caps.version), self.caps.package, self.caps.arch,
                         package_version(str(self.binary), self.caps.package))


@dataclass
class NotUp:
    """A boot whose QEMU or guest never came up (no boot report): what a migration's source booted from the same
    argv says (``why``, as conformance/live/migrate.py's start_pair words it) and its evidence, so that the
    migrations of this run can rely on this boot instead of booting the source again (live/checked.py)."""

    why: str  # "source did not boot: boot timeout: ..." or "source: QEMU did not start (exit code 1): ..."
    text: str  # QEMU's stderr tail and the console tail, what the known-bug match reads ('': QEMU did not start)
    signal: str | None  # the signal QEMU died of by itself, if it did
    ended: bool  # QEMU ended by itself (did not start, crashed, exited): not a wait the load may have caused
    folder: Path  # the boot's VM folder (its argv names it)


@dataclass
class BootRun:
    """Everything a boot produced, for the result record and for the caller's own checks."""

    result: StageResult
    argv: list[str] = field(default_factory=list)
    report: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)
    not_up: NotUp | None = None  # the guest never reported its boot (see NotUp)


def vm_folder(output: Path, case: Case, target: Target) -> Path:
    tag = hashlib.sha1(str(target.binary).encode()).hexdigest()[:6]  # two builds of one version stay apart
    folder = output / "live" / case.name / f"{target.caps.arch}-{target.caps.version}-{tag}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _create_images(domain: Any, vm_dir: Path) -> list[str]:
    """Create the file-backed disks the domain names inside ``vm_dir`` that do not exist yet
    (qemu-img or sparse files)."""
    made = []
    for disk in domain.devices.disks:
        path = (disk.source.attrs.get("file") if disk.source else None) or ""
        if not path or not path.startswith(str(vm_dir)) or Path(path).exists():
            continue
        fmt = disk.driver.get("type", "raw")
        if fmt == "qcow2":
            proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, DISK_SIZE],
                                  capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise LiveError(f"qemu-img create failed for {path}: {proc.stderr.strip()}",
                                hint="install qemu-utils")
        else:
            with open(path, "wb") as fh:
                fh.truncate(1024 * 1024 if disk.device == "cdrom" else 64 * 1024 * 1024)
        made.append(f"{Path(path).name} ({fmt})")
    return made


def _hostdev_macs(domain: Any) -> dict[str, str]:
    """Host PCI address -> MAC of the <interface type='hostdev'> (or the persistent partner of a <hostdev>)."""
    macs: dict[str, str] = {}
    by_alias = {i.alias: i.mac for i in domain.devices.interfaces if getattr(i, "alias", None) and i.mac}
    for iface in domain.devices.interfaces:
        if iface.type == "hostdev" and iface.source_address is not None and iface.mac:
            macs[_pci_text(iface.source_address)] = iface.mac
    for hostdev in domain.devices.hostdevs:
        if hostdev.source_address is not None and hostdev.teaming is not None:
            mac = by_alias.get(getattr(hostdev.teaming, "persistent", None))
            if mac:
                macs[_pci_text(hostdev.source_address)] = mac
    return macs


def _pci_text(address: Any) -> str:
    """Address(domain=0, bus=3, slot=7, function=1) -> '0000:03:07.1'."""
    domain, bus, slot, function = address.pci_tuple()
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


@dataclass
class PreparedVm:
    """A case made ready to start on one target: its folder, domain, static argv and live argv."""

    case: Case
    target: Target
    vm_dir: Path
    argv: list[str]  # the static argv (what libvirt would run)
    live: LiveArgv  # what runs here
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # relative to the output folder


def boot_skip(case: Case, target: Target) -> str | None:
    """Why this case cannot boot on this target (plan step), or None."""
    what = plan(case, target.caps)
    if "boot" not in case.stages:
        return "the case does not boot (argv only)"
    if not what.run:
        return what.skip_reason
    if what.expect_error:
        return f"expected to fail before boot: {what.expect_error}"
    if target.guest is None:
        return f"no test guest: {target.guest_problem}"
    return None


def prepare_vm(case: Case, target: Target, catalogue: Catalogue, output: Path, vm_dir: Path, *,
               machine: str | None = None, image_dir: Path | None = None) -> PreparedVm:
    """Render, validate, parse and build the argv for the target's capabilities (conformance/pipeline.py),
    create the disk images, adapt the argv for a live run. ``machine`` pins the machine type (migration
    across builds); ``image_dir`` points the disks at another VM's images (a migration destination
    shares the source's storage). Raises NeedsHardware or another ConformanceError."""
    from conformance.pipeline import domain_argv, parse_xml, render_case

    caps = target.caps
    assert target.guest is not None
    flavour = str(case.live.get("guest", "cloud"))  # the case's guest flavour (conformance/live/guest.py FLAVOURS)
    if flavour != target.guest.flavour:
        target = replace(target, guest=build_guest(target.guest.arch, flavour=flavour))
    images_in = image_dir or vm_dir
    prepared = PreparedVm(case, target, vm_dir, [], None,  # type: ignore[arg-type]  # set below
                          artifacts={"folder": str(vm_dir.relative_to(output))})
    xml = render_case(case, caps, machine or case.machine_for(caps.arch) or "", defaults=catalogue.defaults,
                      image_dir=str(images_in),
                      overrides={"domain_type": "kvm" if target.accel.accel == "kvm" else "qemu",
                                 "emulator": str(target.binary)})
    domain_file = vm_dir / "domain.xml"
    domain_file.write_text(xml)
    prepared.artifacts["domain"] = str(domain_file.relative_to(output))
    domain, _ = parse_xml(xml, str(domain_file))
    prepared.argv = domain_argv(domain, caps)
    images = _create_images(domain, images_in)
    prepared.live = adapt_for_live(prepared.argv, binary=str(target.binary), accel=target.accel.accel,
                                   vm_dir=vm_dir, boot_args=target.guest.boot_args(
                                       heartbeat_append(), direct=direct_boot(caps, machine or case.machine_for(
                                           caps.arch) or "")),
                                   substitutes=case.substitutes, macs=_hostdev_macs(domain))
    if case.devices_only is not None:  # a bisection run (conformance/live/bisect.py): a subset of the devices
        from conformance.live.bisect import keep_devices

        prepared.live = keep_devices(prepared.live, case.devices_only)
    (vm_dir / "argv.json").write_text(json.dumps(prepared.argv, indent=1) + "\n")
    prepared.artifacts["argv"] = str((vm_dir / "argv.json").relative_to(output))
    prepared.details = {"changes": prepared.live.changes, "substitutions": prepared.live.substitutions,
                        "images": images, "accel_reason": target.accel.reason}
    return prepared


#: s between the guest's heartbeats in live runs (the guest's own default is 1 s). Every wait for "the next
#: heartbeat" costs up to a period: after a restore it took a whole one (median 1.06 s of a restore's 1.3 s in
#: the 6-build matrix at 991f9a6), after a migration half a one on average
HEARTBEAT = 0.5


#: the first QEMU whose x86 -kernel enters an ELF kernel at its PVH entry point (pvh.bin): from it, under pc machine
#: types of 4.0 and later, the guest's kernel can be booted from its ELF image, not decompressed by the emulated CPU
#: (conformance/live/guest.py direct_kernel), when ``direct_boot`` allows it (off by default)
DIRECT_KERNEL_FROM = QemuVersion(4, 0, 0)


def direct_boot(caps: Capabilities, machine: str) -> bool:
    """Whether the live stages boot the kernel's ELF at its PVH entry under this machine type: only when
    QEMU_CONFORMANCE_DIRECT_KERNEL=1 asks for it, QEMU 4.0 or later and an x86 pc machine type of 4.0 or later
    (QEMU's compat turns PVH off for the pc types of 3.1 and older, which then refuse the ELF with an initrd:
    "linux kernel too old to load a ram disk").

    Off by default because QEMU's PVH loader (pvh.bin) copies the initrd to the address x86_load_linux chose,
    the top of below-4G RAM minus acpi_data_size (160 KiB), without checking the firmware's E820 map as the
    bzImage's loader (linuxboot_dma.bin, by E801) does: when SeaBIOS keeps more than that at the top of RAM
    (pc-usb-sound-rich's 13 USB controllers: 180 KiB), the initrd's tail overwrites the USB schedules the
    controllers keep running, and their DMA corrupts it ("Initramfs unpacking failed"). How much the firmware
    keeps depends on the VM's devices and the firmware build; the bzImage's loader keeps clear by
    construction. Evidence and figures: docs/guest.md, "Why it is off"."""
    if os.environ.get("QEMU_CONFORMANCE_DIRECT_KERNEL", "").strip() != "1" or caps.version < DIRECT_KERNEL_FROM:
        return False
    found = caps.machine(machine) if machine else None
    name = found.name if found is not None else machine
    versioned = re.fullmatch(r"pc-(?:q35|i440fx)-(\d+)\.(\d+)", name)
    return versioned is not None and (int(versioned[1]), int(versioned[2])) >= (4, 0)


def heartbeat_append() -> str:
    """``guest.hb=SECONDS`` for the guest's kernel command line: HEARTBEAT, or the period
    QEMU_CONFORMANCE_GUEST_HEARTBEAT sets (0.05-60 s); '' for the guest's own 1 s."""
    value = os.environ.get("QEMU_CONFORMANCE_GUEST_HEARTBEAT", "").strip()
    try:
        period = float(value) if value else HEARTBEAT
    except ValueError:
        period = HEARTBEAT
    return f"guest.hb={period:g}" if 0.05 <= period <= 60 and period != 1 else ""


def launch(prepared: PreparedVm, name: str, *, incoming: bool = False, role: str = "destination") -> GuestVm:
    """Start QEMU for a prepared VM (start step). With ``incoming``, it waits for a migration stream
    (``-incoming defer``) and keeps ``-S``, as libvirt starts a destination: once the stream is in, it
    stays paused until the migrate stage has compared its RAM with the source's and sends ``cont``.
    ``role`` names it in the recorded changes (a restored source starts so too). Raises LaunchFailed when
    QEMU does not come up."""
    argv = prepared.live.argv[1:]
    if incoming:
        argv = [*argv, *([] if "-S" in argv else ["-S"]), "-incoming", "defer"]
        prepared.details["changes"] = [*prepared.details["changes"], f"{role}: -incoming defer"]
    vm = GuestVm(prepared.target.binary, argv, prepared.vm_dir, prepared.live.console_log, name=name)
    try:
        return vm.start(paused=incoming)
    except BaseException:
        vm.stop()
        raise


def vm_artifacts(vm: GuestVm, output: Path) -> dict[str, str]:
    """Console, QMP transcript, stderr and command line of a VM, relative to the output folder."""
    def rel(path: Path) -> str:
        return str(path.relative_to(output)) if path.exists() else ""

    found = {"console": rel(vm.console), "qmp": rel(vm.process.transcript_path),
             "stderr": rel(vm.process.stderr_path), "cmdline": rel(vm.process.workdir / "cmdline.json")}
    return {k: v for k, v in found.items() if v}


def launch_failure(exc: LiveError) -> str:
    """One line for a QEMU that did not come up: how it ended and its last stderr line."""
    if isinstance(exc, LaunchFailed):
        last = exc.stderr_tail.strip().splitlines()[-1] if exc.stderr_tail.strip() else ""
        state = "it is still running" if exc.exit.returncode is None else exc.exit.describe()
        return f"QEMU did not start ({state})" + (f": {last}" if last else "")
    return f"QEMU did not start: {exc.message}"


def run_boot(case: Case, target: Target, catalogue: Catalogue, output: Path, *,
             timeout: float = BOOT_TIMEOUT, keep: Callable[[GuestVm, PreparedVm], tuple[str, bool]] | None = None
             ) -> BootRun:
    """Boot one case on one QEMU binary; always returns a result (never raises for a QEMU problem).

    plan -> prepare -> start -> check -> explain; the result is built once, at the end. ``keep``: given the
    VM that passed its checks, before it stops (the migrations' checked source: conformance/live/checked.py);
    what it says goes to ``details.checked_state`` and changes no verdict; when it says it took the VM (handed
    over to the migration from it), the boot does not stop it."""
    caps = target.caps
    started = time.monotonic()
    verdict, reason = "error", "not run"
    artifacts: dict[str, str] = {}
    details: dict[str, Any] = {}
    run = BootRun(StageResult(case=case.name, stage="boot", verdict="skip"))
    skip = boot_skip(case, target)
    if skip:
        verdict, reason = "skip", skip
    else:
        vm_dir = vm_folder(output, case, target)
        try:
            prepared = prepare_vm(case, target, catalogue, output, vm_dir)
        except NeedsHardware as exc:
            verdict, reason = "skip", exc.message
        except ConformanceError as exc:
            verdict, reason = "error", f"cannot prepare the boot: {exc}"
        else:
            artifacts, details = prepared.artifacts, prepared.details
            run.argv = prepared.live.argv
            verdict, reason, vm, down, launch_error = _start_and_check(prepared, timeout, details)
            handed = False  # the VM went, paused, to the migration from it, which stops it
            if keep is not None and vm is not None and verdict == "pass":
                try:
                    details["checked_state"], handed = keep(vm, prepared)
                except Exception as exc:  # the boot's verdict stands; its migrations then boot their source
                    details["checked_state"] = f"not saved: {type(exc).__name__}: {exc}"
                except BaseException:
                    vm.stop()
                    raise
            if vm is not None:
                details["exit"] = "running, paused: handed over to the migration from it" if handed \
                    else vm.stop().describe()
                details["cpu_s"] = round(vm.cpu_seconds(), 2)  # QEMU's, its save and load check for others aside
                run.report, run.events = vm.report, list(vm.process.events)
                artifacts.update(vm_artifacts(vm, output))
            if down:
                ended = (launch_error is not None and launch_error.exit.returncode is not None) if vm is None \
                    else not vm.process.exit.requested
                run.not_up = NotUp(f"source: {reason}" if vm is None else f"source did not boot: {reason}",
                                   "\n".join([vm.process.stderr_tail(), vm.console_tail(10)]) if vm else "",
                                   None if vm is None or vm.process.exit.requested else vm.process.exit.signal,
                                   ended, vm_dir)
            verdict, reason = explain(verdict, reason, [vm] if vm else [], caps, "boot", details,
                                      accel=target.accel.accel, argv=prepared.live.argv)
            if not artifacts.get("console"):
                artifacts.pop("console", None)
    run.result = StageResult(case=case.name, stage="boot", verdict=verdict, reason=reason, arch=caps.arch,
                             qemu=target.build, accel=target.accel.accel, duration_s=time.monotonic() - started,
                             artifacts=artifacts, details=details)
    return run


def _start_and_check(prepared: PreparedVm, timeout: float, details: dict[str, Any]
                     ) -> tuple[str, str, GuestVm | None, bool, LaunchFailed | None]:
    """(verdict, reason, the VM to stop, whether it never came up (no boot report), QEMU's launch failure when
    it did not start) for a prepared boot."""
    try:
        vm = launch(prepared, f"{prepared.case.name} on {prepared.target.binary}")
    except LiveError as exc:
        return "fail", launch_failure(exc), None, True, exc if isinstance(exc, LaunchFailed) else None
    try:
        waited = vm.wait_report("boot", timeout)
        details["boot_s"] = round(waited.seconds, 3)
        if not waited.ok:
            details["console_tail"] = vm.console_tail()
            details["stderr_tail"] = vm.process.stderr_tail()
            return "fail", waited.reason, vm, True, None
        failures, checked, notes = check_guest(vm, prepared, details)
    except BaseException:
        vm.stop()
        raise
    if failures:
        return "fail", "; ".join(failures), vm, False, None
    return "pass", (f"booted in {waited.seconds:.1f} s; {checked} checks passed"
                    + (f"; {notes} notes" if notes else "")), vm, False, None


def check_guest(vm: GuestVm, prepared: PreparedVm, details: dict[str, Any]) -> tuple[list[str], int, int]:
    """Check step: failover negotiated and enslaved, the guest's report against the devices QEMU was
    given, and QMP's view against the guest's. (failures, checks passed, notes)."""
    target, argv = prepared.target, prepared.live.argv
    devs = devices(argv)
    pairs = failover_pairs(devs)
    if pairs:
        failure = _wait_failover(vm, pairs, target, details)
        if failure:
            return [failure], 0, 0
    checks = check_report(vm.report, devs, target.guest.has_driver if target.guest else (lambda _m: False),
                          MachineFacts.from_argv(argv))
    qmp_failures = qmp_cross_check(vm, devs, details)
    try:  # every device the guest kernel has a driver for is bound (conformance/live/checks.py)
        qmp_pci = [d for bus in vm.process.qmp.cmd("query-pci") for d in _walk_pci(bus.get("devices", []))]
        bound = check_drivers_bound(vm.report, devs, qmp_pci, target.guest.has_driver if target.guest
                                    else (lambda _m: False))
    except QmpError as exc:
        qmp_failures.append(f"QMP query-pci failed: {exc.message}")
    else:
        checks.failures += bound.failures
        checks.checked += bound.checked
        checks.notes += bound.notes
    details.update({"checked": checks.checked, "notes": checks.notes})
    return checks.failures + qmp_failures, len(checks.checked), len(checks.notes)


def _wait_failover(vm: GuestVm, pairs: list[tuple[dict[str, Any], dict[str, Any]]], target: Target,
                   details: dict[str, Any]) -> str | None:
    """FAILOVER_NEGOTIATED for each standby, then a guest report with the primary enslaved."""
    session = vm.process.qmp
    for standby, primary in pairs:
        event = session.wait_event("FAILOVER_NEGOTIATED", NEGOTIATION_TIMEOUT,
                                   match=lambda e, s=standby: e.get("data", {}).get("device-id") == s.get("id"),
                                   alive=vm.alive)
        if event is None:
            return (f"no FAILOVER_NEGOTIATED for {standby.get('id')} within {NEGOTIATION_TIMEOUT:g} s"
                    + (f" ({vm.trouble})" if vm.trouble else ""))
        details.setdefault("failover_negotiated_s", []).append(
            round(time.monotonic() - (vm.cont_at or time.monotonic()), 3))
        module = {"vmxnet3": "vmxnet3", "e1000e": "e1000e", "virtio-net-pci": "virtio_net"}.get(
            str(primary.get("driver")), "")
        if target.guest is not None and not target.guest.has_driver(module):
            continue
        mac = str(standby.get("mac", ""))

        def enslaved(report: Any, mac: str = mac) -> bool:
            return failover_team_enslaved(report, mac, primary_pci_listed=True)

        waited = vm.wait_report(enslaved, NEGOTIATION_TIMEOUT)
        if not waited.ok:
            return (f"the guest did not enslave the primary {primary.get('id')} after FAILOVER_NEGOTIATED "
                    f"({waited.reason})")
    return None


def qmp_cross_check(vm: GuestVm, devs: list[dict[str, Any]], details: dict[str, Any], *,
                    report: Any = None) -> list[str]:
    """Every -device id is a child of /machine/peripheral; query-pci agrees with the guest's ``report``
    (default: the VM's own)."""
    failures = []
    try:
        children = vm.process.qmp.cmd("qom-list", path="/machine/peripheral")
        present = {c["name"] for c in children if str(c.get("type", "")).startswith("child<")}
        pci = vm.process.qmp.cmd("query-pci")
    except QmpError as exc:
        return [f"QMP cross-check failed: {exc.message}"]
    wanted = {str(d["id"]) for d in devs if d.get("id")}
    missing = sorted(wanted - present)
    if missing:
        failures.append(f"QMP: devices missing from /machine/peripheral: {', '.join(missing)}")
    qmp_pci = [dev for bus in pci for dev in _walk_pci(bus.get("devices", []))]
    # vendor ffff is no function (PCI): QEMU 10.0 lists an igb's disabled SR-IOV VFs so, the guest cannot see them
    qmp_ids = Counter(f"{d['id']['vendor']:04x}:{d['id']['device']:04x}" for d in qmp_pci
                      if "id" in d and d["id"]["vendor"] != 0xFFFF)
    guest_ids = Counter(dev.id for dev in (report or vm.report).pci)
    unseen = sorted(f"{pci_id} x{n - guest_ids[pci_id]}" for pci_id, n in qmp_ids.items() if guest_ids[pci_id] < n)
    if unseen:
        failures.append(f"QMP query-pci lists PCI functions the guest does not see: {', '.join(unseen)}")
    details["qmp"] = {"peripheral": len(present), "pci_functions": sum(qmp_ids.values()),
                      "guest_pci_functions": sum(guest_ids.values())}
    return failures


def _walk_pci(devs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for dev in devs:
        out.append(dev)
        bridge = dev.get("pci_bridge") or {}
        out += _walk_pci(bridge.get("devices", []))
    return out


def explain(verdict: str, reason: str, vms: list[GuestVm], caps: Capabilities, stage: str,
            details: dict[str, Any], *, peer: QemuVersion | None = None, side: str = "",
            accel: str = "", argv: list[str] | None = None, seen: NotUp | None = None) -> tuple[str, str]:
    """Explain step, one rule (conformance/knownbugs/matcher.py): a failure that known bugs of this QEMU
    version explain (under ``accel``, the target's decision, with the argv QEMU ran: the VM's, else
    ``argv``, the one it was given) becomes known-bug, naming them all; a pass where a known bug of this
    version should have shown becomes not-reproduced. ``seen``: with no VM, what an earlier boot of the same
    argv saw (its signal, stderr and console tails), read as that VM's."""
    if verdict == "pass":
        return _not_reproduced(reason, vms, caps, stage, details, peer=peer, side=side, accel=accel)
    if verdict != "fail":
        return verdict, reason
    for vm in vms or [None]:  # None: QEMU did not start, the reason (with its stderr line) is all there is
        signal, text, ran = None, reason, argv
        if vm is not None:
            exit_ = vm.process.exit
            signal = None if exit_.requested else exit_.signal
            if signal:
                details.setdefault("signal", signal)
            text = "\n".join([reason, vm.process.stderr_tail(), vm.console_tail(10)])
            ran = vm.process.argv
        elif seen is not None:
            signal, text = seen.signal, "\n".join([reason, seen.text]) if seen.text else reason
            if signal:
                details.setdefault("signal", signal)
        found = explain_failure(Facts(version=caps.version, stage=stage, arch=caps.arch, accel=accel, side=side,
                                      peer=peer, argv=tuple(ran) if ran is not None else None,
                                      available=AVAILABLE_FEATURES, signal=signal, text=text,
                                      package=_package_of(caps)))
        record = found.record()
        if record is not None:
            details["known_bug"] = record
            bug, others = found.bugs[0], [b.id for b in found.bugs[1:]]
            also = f"; also explained by {', '.join(others)}" if others else ""
            return "known-bug", f"known bug {bug.id} ({bug.title}; fixed: {bug.fixed}){also}: {reason}"
    return verdict, reason


def _package_of(caps: Capabilities) -> str:
    """The build's distribution package version (conformance/qemu/host.py), for fixed_in_packages."""
    prov = getattr(caps, "provenance", None)  # a stored fixture's binary is not this host's
    return package_version(prov.binary if prov is not None and prov.source == "probe" else None, caps.package)


def _not_reproduced(reason: str, vms: list[GuestVm], caps: Capabilities, stage: str, details: dict[str, Any], *,
                    peer: QemuVersion | None, side: str, accel: str) -> tuple[str, str]:
    for vm in vms:
        facts = Facts(version=caps.version, stage=stage, arch=caps.arch, accel=accel, side=side, peer=peer,
                      argv=tuple(vm.process.argv), available=AVAILABLE_FEATURES, package=_package_of(caps))
        bugs = expected_bugs(facts)
        fixed = [] if bugs else fixed_by_package(facts)
        if fixed:  # a distribution's backport, its package version named by the bug (fixed_in_packages)
            details["fixed_in_package"] = [{**b.record(), "package": facts.package} for b in fixed]
            return "pass", (f"known bug {fixed[0].id} ({fixed[0].title}) is fixed in package {facts.package} "
                            f"({fixed[0].fixed_in(facts.package)} in fixed_in_packages): {reason}")
        if bugs:
            details["not_reproduced"] = [b.record() for b in bugs]
            package = caps.package or "no package string"
            return "not-reproduced", (f"known bug {bugs[0].id} ({bugs[0].title}) affects QEMU {caps.version} "
                                      f"upstream but did not show with {package}: fixed or backported? {reason}")
    return "pass", reason
