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
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.argv.options import devices
from conformance.caps.model import Capabilities
from conformance.cases import Case, Catalogue, case_variables, plan
from conformance.errors import ConformanceError, LiveError
from conformance.knownbugs.matcher import explain_failure
from conformance.live.accel import AccelDecision
from conformance.live.adapt import NeedsHardware, adapt_for_live
from conformance.live.checks import MachineFacts, check_report, failover_pairs
from conformance.live.guest import Guest
from conformance.live.process import QmpError
from conformance.live.vm import GuestVm
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
        return QemuBuild(str(self.binary), str(self.caps.version), self.caps.package, self.caps.arch)


@dataclass
class BootRun:
    """Everything a boot produced, for the result record and for the caller's own checks."""

    result: StageResult
    argv: list[str] = field(default_factory=list)
    report: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)


def vm_folder(output: Path, case: Case, target: Target) -> Path:
    tag = hashlib.sha1(str(target.binary).encode()).hexdigest()[:6]  # two builds of one version stay apart
    folder = output / "live" / case.name / f"{target.caps.arch}-{target.caps.version}-{tag}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _create_images(domain: Any, vm_dir: Path) -> list[str]:
    """Create the file-backed disks the domain names inside the VM folder (qemu-img or sparse files)."""
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


def run_boot(case: Case, target: Target, catalogue: Catalogue, output: Path, *,
             timeout: float = BOOT_TIMEOUT) -> BootRun:
    """Boot one case on one QEMU binary; always returns a result (never raises for a QEMU problem)."""
    caps = target.caps
    base = {"case": case.name, "stage": "boot", "arch": caps.arch, "qemu": target.build,
            "accel": target.accel.accel}
    what = plan(case, caps)
    if "boot" not in case.stages:
        return BootRun(StageResult(**base, verdict="skip", reason="the case does not boot (argv only)"))
    if not what.run:
        return BootRun(StageResult(**base, verdict="skip", reason=what.skip_reason))
    if what.expect_error:
        return BootRun(StageResult(**base, verdict="skip", reason=f"expected to fail before boot: {what.expect_error}"))
    if target.guest is None:
        return BootRun(StageResult(**base, verdict="skip", reason=f"no test guest: {target.guest_problem}"))
    started = time.monotonic()
    vm_dir = vm_folder(output, case, target)
    artifacts = {"folder": str(vm_dir.relative_to(output))}

    def rel(path: Path) -> str:
        return str(path.relative_to(output))

    try:
        from conformance.argv import build_argv
        from conformance.domain.parse import parse_domain
        from conformance.domain.render import render_template
        from conformance.domain.schema import validate_schema
        from conformance.domain.semantics import validate_domain

        variables = case_variables(case, caps, what.machine or "", image_dir=str(vm_dir),
                                   defaults=catalogue.defaults,
                                   overrides={"domain_type": "kvm" if target.accel.accel == "kvm" else "qemu",
                                              "emulator": str(target.binary)})
        xml = render_template(case.template, variables)
        (vm_dir / "domain.xml").write_text(xml)
        artifacts["domain"] = rel(vm_dir / "domain.xml")
        validate_schema(xml, source=str(vm_dir / "domain.xml"))
        domain = parse_domain(xml, source=str(vm_dir / "domain.xml"))
        validate_domain(domain, caps)
        argv = build_argv(domain, caps)
        images = _create_images(domain, vm_dir)
        live = adapt_for_live(argv, binary=str(target.binary), accel=target.accel.accel, vm_dir=vm_dir,
                              boot_args=target.guest.boot_args(), substitutes=case.substitutes,
                              macs=_hostdev_macs(domain))
    except NeedsHardware as exc:
        return BootRun(StageResult(**base, verdict="skip", reason=exc.message, artifacts=artifacts,
                                   duration_s=time.monotonic() - started))
    except ConformanceError as exc:
        return BootRun(StageResult(**base, verdict="error", reason=f"cannot prepare the boot: {exc}",
                                   artifacts=artifacts, duration_s=time.monotonic() - started))
    (vm_dir / "argv.json").write_text(json.dumps(argv, indent=1) + "\n")
    artifacts["argv"] = rel(vm_dir / "argv.json")
    details: dict[str, Any] = {"changes": live.changes, "substitutions": live.substitutions, "images": images,
                               "accel_reason": target.accel.reason}
    vm = GuestVm(target.binary, live.argv[1:], vm_dir, live.console_log, name=f"{case.name} on {target.binary}")
    run = BootRun(StageResult(**base, verdict="error", reason="not run"), argv=live.argv)
    try:
        run.result = _boot_and_check(vm, live.argv, target, timeout, details)
    finally:
        exit_ = vm.stop()
        details["exit"] = exit_.describe()
        run.report = vm.report
        run.events = vm.process.events
        artifacts.update({"console": rel(live.console_log) if live.console_log.exists() else "",
                          "qmp": rel(vm.process.transcript_path), "stderr": rel(vm.process.stderr_path),
                          "cmdline": rel(vm_dir / "cmdline.json")})
        run.result.artifacts = {k: v for k, v in artifacts.items() if v}
        run.result.details = {**details, **run.result.details}
        run.result.duration_s = time.monotonic() - started
        run.result.case, run.result.stage = case.name, "boot"
        run.result.arch, run.result.qemu, run.result.accel = caps.arch, target.build, target.accel.accel
        _explain(run.result, vm, caps)
    return run


def _boot_and_check(vm: GuestVm, argv: list[str], target: Target, timeout: float,
                    details: dict[str, Any]) -> StageResult:
    def result(verdict: str, reason: str = "") -> StageResult:
        return StageResult(case="", stage="boot", verdict=verdict, reason=reason)

    try:
        vm.start()
    except (LiveError, QmpError) as exc:
        return result("fail", f"QEMU did not start: {exc.message}; {vm.process.exit_text()}")
    waited = vm.wait_report("boot", timeout)
    details["boot_s"] = round(waited.seconds, 3)
    if not waited.ok:
        details["console_tail"] = vm.console_tail()
        details["stderr_tail"] = vm.process.stderr_tail()
        return result("fail", waited.reason)
    devs = devices(argv)
    pairs = failover_pairs(devs)
    if pairs:
        failure = _wait_failover(vm, pairs, target, details)
        if failure:
            return result("fail", failure)
    checks = check_report(vm.report, devs, target.guest.has_driver if target.guest else (lambda _m: False),
                          MachineFacts.from_argv(argv))
    qmp_failures = _qmp_cross_check(vm, devs, details)
    details.update({"checked": checks.checked, "notes": checks.notes})
    failures = checks.failures + qmp_failures
    if failures:
        return result("fail", "; ".join(failures))
    return result("pass", f"booted in {waited.seconds:.1f} s; {len(checks.checked)} checks passed"
                          + (f"; {len(checks.notes)} notes" if checks.notes else ""))


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
        mac = str(standby.get("mac", "")).lower()

        def enslaved(report: Any, mac: str = mac) -> bool:
            """Standby and primary enslaved, in a report that also lists the primary's PCI function (the
            guest lists PCI before NICs: a report taken during the hot-plug can have the NIC only)."""
            team = [n for n in report.nets if (n.mac or "").lower() == mac and n.master]
            primary_pci = {n.pci for n in team if n.role == "primary"}
            listed = {p.addr for p in report.pci}
            return {"standby", "primary"} <= {n.role for n in team} and primary_pci <= listed

        waited = vm.wait_report(enslaved, NEGOTIATION_TIMEOUT)
        if not waited.ok:
            return (f"the guest did not enslave the primary {primary.get('id')} after FAILOVER_NEGOTIATED "
                    f"({waited.reason})")
    return None


def _qmp_cross_check(vm: GuestVm, devs: list[dict[str, Any]], details: dict[str, Any]) -> list[str]:
    """Every -device id is a child of /machine/peripheral; query-pci agrees with the guest."""
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
    qmp_ids = Counter(f"{d['id']['vendor']:04x}:{d['id']['device']:04x}" for d in qmp_pci if "id" in d)
    guest_ids = Counter(dev.id for dev in vm.report.pci)
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


def _explain(result: StageResult, vm: GuestVm, caps: Capabilities) -> None:
    """A failure that a known bug of this QEMU version explains becomes known-bug."""
    if result.verdict != "fail":
        return
    exit_ = vm.process.exit
    text = "\n".join([result.reason, vm.process.stderr_tail(), vm.console_tail(10)])
    signal = None if exit_.requested else exit_.signal
    bug = explain_failure(caps.version, "boot", signal=signal, text=text)
    if signal:
        result.details["signal"] = signal
    if bug is not None:
        result.verdict = "known-bug"
        result.reason = f"known bug {bug.id} ({bug.title}; fixed: {bug.fixed}): {result.reason}"
