"""Boot once, migrate many: a migration's source guest, booted and checked once, saved, restored per pair.

A checked source is a guest that booted and passed the boot checks (conformance/live/boot.py) on one
build under one machine type. Its state is saved once into its VM folder, the guest stopped first
(``stop``, ``migrate`` to ``exec:cat > checked.state``: every build has exec:) with its disk images beside
it; a failover guest runs while saved (it must release its primary), and before QEMU 9.0 under TCG its
state is shared only when the loaded copy's RAM equals the saved guest's.
Each migration with that build as its source and that machine type then restores it instead of booting
again: a fresh folder with copies of the images, QEMU started with ``-incoming defer -S``,
``migrate-incoming exec:cat ...``, ``cont``. Measured on 2 shared cores (TCG, 256 MiB): a boot with its
checks takes 4-13 s, a restore 0.3-0.6 s to a running guest, plus the first heartbeat.

The restored guest is proved to be the checked one, and the proof is in the result (``details.restored``):
- QEMU's argv is the checked VM's, with only the folder and the machine alias (``q35`` for the type it
  resolves to, which the state's configuration section names) told apart;
- the guest's heartbeat goes on from the last one before the save (``HB n`` with n above it) and no
  GUEST-INIT appears: the same guest, not a boot;
- a failover team was unplugged by the save (QEMU unplugs the primary before any migration): the
  restored source sends FAILOVER_NEGOTIATED, plugs the primary back, and the guest re-reports it enslaved
  (a new report, not the one read before the save);
- QEMU's devices (qom-list, query-pci) agree with the guest's report, as after the boot.
A restore that fails any of these is a RestoreFailed with its evidence (argv, stderr and console tails):
the migration's result is an ``error`` of the suite, never a fresh boot in its place.

Where a checked source comes from: the boot stage's own VM when the plan migrates from that build (the
runner asks; conformance/runner.py), else the first migration that needs it, when more than one will. A key
with one planned migration (a host qualification: each case migrates once, on its own build) saves no state:
the boot stage hands its checked VM over, paused, to that migration (``hand``, ``take``), which resumes it
with ``cont`` and proves it as a kept source is proved (``resume``: the same argv, the heartbeat going on from
the last one before the pause, no GUEST-INIT, QMP agreeing with the guest's report); a hand-over that fails
that proof is an ``error`` of the suite with its evidence (``details.resume_failed``), never a boot in its
place. A boot VM past HANDED_MAX waiting at once is saved instead, as before.
A source that fails its checks, or a state that cannot be saved, is never shared: each migration then
boots its own source as before (``details.source_from`` says why), so its verdict is the same as before.

A source also serves the next migration of its key (``Resumable``, ``resume``): after a migration that passed,
its destination stopped and its guest's disks unwritten by it, the source (``postmigrate``) is kept paused and
the next migration resumes it with ``cont``, proved by the same heartbeat going on; a key of a guest that is not
a failover one saves no state (its first migration boots and keeps its source). A failover source is never kept:
QEMU leaves its primary unplugged after a completed migration.

Two outcomes are results of their own rather than only reasons:
- a source that never came up in this run's boot stage (same build, argv and machine type; a known-bug
  hang, a crash, a QEMU that did not start) is not booted again by its migrations: each is judged on that
  boot's evidence (``SourceDown``), as its own boot would have been, and names the boot it relies on
  (``details.source_from``, ``details.source_boot``). An unexplained hang is booted again (the load may
  have caused it);
- a saved state its own build cannot load (the check right after the save; for a state saved stopped that one
  migration uses, that migration's restore, which then boots its own source) is a ``migrate`` result of the
  build with itself (``details.state_load``), with the loading QEMU's exit, signal and stderr tail.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from conformance.argv.options import devices
from conformance.caps.model import QemuVersion
from conformance.errors import LiveError
from conformance.live.boot import NotUp, PreparedVm, launch, launch_failure, qmp_cross_check
from conformance.live.checks import failover_pairs, failover_team_enslaved
from conformance.live.ramcheck import compare_ram, ram_region_names
from conformance.live.vm import GuestVm
from conformance.qemu.qmp import QmpError

STATE_FILE = "checked.state"
#: bytes/s for the save: a stopped guest's state is written at full speed (QEMU's own default, 128 MiB/s,
#: made a save of a 256 MiB guest take 0.7 s of its 0.1 s); the value libvirt sets before it migrates
SAVE_BANDWIDTH = (2**63 - 1) // 2**20 * 2**20
SAVE_TIMEOUT = 30.0  # s for the save
#: s in wait-unplug before the save gives up: a failover primary's release takes 6.5 s under native PCIe
#: hotplug (pc-q35-5.2), never with the known bug pcie-native-hotplug-plug-read-as-unplug (QEMU 5.2)
SAVE_UNPLUG_TIMEOUT = 8.0
#: known bugs under which a failover guest never releases its primary: its save (which waits for the release) is
#: not tried (it only waited SAVE_UNPLUG_TIMEOUT; measured: every 5.2 failover guest on q35 root ports)
NEVER_RELEASED = ("pcie-native-hotplug-plug-read-as-unplug",)
#: the first QEMU whose live migration under TCG keeps every guest write (tcg-migration-lost-dirty-pages)
LIVE_SAVE_FROM = QemuVersion(9, 0, 0)
LOAD_TIMEOUT = 30.0  # s for the restore to load the state
SETTLE_TIMEOUT = 10.0  # s for the first heartbeat, and the re-plug of a failover primary, after the restore
#: restored sources kept paused (postmigrate) at once for the next migration of their key: each holds its guest's
#: RAM; one past this is stopped instead (its key's next migration restores, as without keeping)
IDLE_SOURCES = 4
#: boot stage VMs handed over, paused, to their key's one migration and waiting for it at once (each holds its
#: guest's RAM); one past this is saved to a state file instead, as a key with several migrations is
HANDED_MAX = 6

#: (output folder, case, binary, machine type the state names): what the runner counts migrations by
Key = tuple[str, str, str, str]


class RestoreFailed(LiveError):
    """The checked state could not be restored, or the restored guest is not provably the checked one."""

    def __init__(self, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(message)
        self.evidence = evidence


@dataclass
class CheckedState:
    """A checked guest saved to a file: what a restore needs and what proves it."""

    key: Key
    folder: Path  # the checked VM's folder: its console, QMP transcript, the state, its disk images
    argv: list[str]  # the checked VM's live argv
    machine: str  # the machine type the state names (resolved from an alias)
    console: bytes  # the checked console up to the save (complete lines)
    heartbeat: int | None  # the guest's last heartbeat before the save
    reports: int  # the guest's complete re-reports before the save
    images: list[str]  # disk images in ``folder`` (names), copied into each restored source's folder
    origin: str  # "boot stage" or "migration <id>"
    saved: dict[str, Any] = field(default_factory=dict)  # seconds and bytes of the save
    #: loaded once by its own build right after the save (conformance/live/migrate.py ``loads``); False: not, as
    #: the one migration that uses it loads it (a load that fails there is the same finding, and that migration
    #: boots its own source)
    verified: bool = True

    @property
    def digest(self) -> str:
        return argv_digest(self.argv, self.folder)

    @property
    def state_file(self) -> Path:
        return self.folder / STATE_FILE

    def record(self, output: Path) -> dict[str, Any]:
        folder = self.folder.relative_to(output) if self.folder.is_relative_to(output) else self.folder
        return {"folder": str(folder), "origin": self.origin, "machine": self.machine,
                "saved_heartbeat": self.heartbeat, **self.saved}


@dataclass
class SourceDown:
    """A source that never came up in this run's boot stage, with the same argv: what its migrations rely on
    instead of booting it again (``not_up``: what that boot saw; ``boot``: its result, named)."""

    not_up: NotUp
    boot: str  # "boot CASE on QEMU VERSION ARCH: VERDICT (its folder)"
    verdict: str  # that boot's verdict

    def record(self) -> dict[str, Any]:
        return {"boot": self.boot, "verdict": self.verdict, "why": self.not_up.why,
                "signal": self.not_up.signal, "ended_by_itself": self.not_up.ended}


def resolved_machine(argv: list[str], alias_to: Callable[[str], str | None]) -> str:
    """The machine type an argv runs (an alias resolved by ``alias_to``), '' when it names none."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-machine":
            first = argv[i + 1].split(",")[0]
            name = first.partition("=")[2] if first.startswith("type=") else first
            return alias_to(name) or name
    return ""


def comparable_argv(argv: list[str], folder: Path, alias_to: Callable[[str], str | None]) -> list[str]:
    """An argv with its VM folder and machine alias told apart: what two VMs of one checked state share."""
    out = []
    after_machine = False
    for arg in argv:
        arg = arg.replace(str(folder), "<vm>")
        if after_machine:
            head, sep, rest = arg.partition(",")
            name = head.partition("=")[2] if head.startswith("type=") else head
            arg = (alias_to(name) or name) + sep + rest
        after_machine = arg == "-machine"
        out.append(arg)
    return out


def argv_digest(argv: list[str], folder: Path, alias_to: Callable[[str], str | None] = lambda _n: None) -> str:
    """What tells the checked states of one key apart: the argv without its folder, its machine alias resolved
    by ``alias_to`` (a state is restored only into the same command line, as ``restore`` compares them: the
    boot stage's ``q35`` and a migration's ``pc-q35-10.0`` on 10.0 are one)."""
    return hashlib.sha256("\0".join(comparable_argv(argv, folder, alias_to)).encode()).hexdigest()[:16]


def image_names(prepared: PreparedVm) -> list[str]:
    """The file-backed disks of a prepared VM that live in its folder (what a restore carries over)."""
    from conformance.pipeline import parse_xml

    domain, _ = parse_xml((prepared.vm_dir / "domain.xml").read_text(), str(prepared.vm_dir / "domain.xml"))
    names = set()
    for disk in domain.devices.disks:
        path = Path((disk.source.attrs.get("file") if disk.source else None) or "")
        if path.parent == prepared.vm_dir and path.is_file():
            names.add(path.name)
    return sorted(names)


def save(vm: GuestVm, prepared: PreparedVm, key: Key, origin: str) -> CheckedState:
    """Save a running, checked guest into its folder (the VM ends ``postmigrate``); LiveError when not.

    The guest is stopped first, so it writes nothing while it is saved: QEMU before 9.0 under TCG can lose
    guest writes in a live migration (known bug tcg-migration-lost-dirty-pages), and a state saved live would
    carry the loss into every migration restored from it. A failover guest must run while it is saved (it
    releases its primary when QEMU asks): ``same_ram`` then compares the stopped guest with the loaded state."""
    q = vm.process.qmp
    failover = bool(failover_pairs(devices(prepared.live.argv)))
    never = never_released(prepared) if failover else ""
    if never:
        raise LiveError(never)
    vm.expect_stop = True
    started = time.monotonic()
    try:
        if not failover:
            q.cmd("stop")
        q.cmd("migrate-set-parameters", **{"max-bandwidth": SAVE_BANDWIDTH})
        q.cmd("migrate", uri=f"exec:cat > {STATE_FILE}")  # QEMU runs in its VM folder
        status = ""
        while time.monotonic() - started < SAVE_TIMEOUT:
            status = str(q.cmd("query-migrate", timeout=5).get("status", ""))
            if status in ("completed", "failed", "cancelled"):
                break
            if status == "wait-unplug" and time.monotonic() - started > SAVE_UNPLUG_TIMEOUT:
                break
            time.sleep(0.05)
        if status != "completed":
            info = q.cmd("query-migrate", timeout=5)
            with contextlib.suppress(QmpError):
                q.cmd("migrate_cancel", timeout=5)
            raise LiveError(f"saving the checked guest ended {status or 'nowhere'} after "
                            f"{time.monotonic() - started:.1f} s" + (f": {info['error-desc']}"
                                                                     if info.get("error-desc") else ""))
    except QmpError as exc:
        raise LiveError(f"saving the checked guest: {exc.message}") from None
    took = time.monotonic() - started
    vm.reader.poll_file(vm.console)
    text = vm.console.read_bytes() if vm.console.exists() else b""
    state = prepared.vm_dir / STATE_FILE
    return CheckedState(key, prepared.vm_dir, list(prepared.live.argv), key[3], text[:text.rfind(b"\n") + 1],
                        vm.report.last_heartbeat, len(vm.report.reports), image_names(prepared), origin,
                        {"save_s": round(took, 3), "bytes": state.stat().st_size})


def never_released(prepared: PreparedVm) -> str:
    """Why a failover guest's save is not tried: a known bug (NEVER_RELEASED) concerns its argv on its build, so
    QEMU would wait for a primary the guest never releases; '' when none does."""
    from conformance.knownbugs.matcher import bugs_concerning

    caps = prepared.target.caps
    found = [b.id for b in bugs_concerning(caps.version, prepared.live.argv, caps.arch) if b.id in NEVER_RELEASED]
    return (f"not tried: known bug {found[0]} concerns this failover guest on QEMU {caps.version} (the guest never "
            f"releases its primary, so the save would only wait {SAVE_UNPLUG_TIMEOUT:g} s in wait-unplug)") \
        if found else ""


def saved_live(prepared: PreparedVm) -> bool:
    """Whether ``save`` saves this guest running (a failover guest) on a build that can lose its writes so."""
    target = prepared.target
    return bool(failover_pairs(devices(prepared.live.argv))) and target.accel.accel == "tcg" \
        and target.caps.version < LIVE_SAVE_FROM


def same_ram(saved: GuestVm, loaded: GuestVm, must: bool) -> str:
    """'' when the loaded state's RAM equals the saved guest's (stopped after its save), else why not; a
    comparison that cannot run is a reason only when it ``must`` run (a guest saved live where writes can be
    lost: tcg-migration-lost-dirty-pages)."""
    ram = compare_ram(saved, loaded, ram_region_names(loaded.process.argv))
    if ram.note:
        return f"its RAM could not be compared with the saved guest's ({ram.note})" if must else ""
    failure, _, _ = ram.verdict()
    return f"the saved state's RAM differs from the guest's (known bug tcg-migration-lost-dirty-pages?): " \
        f"{failure}" if failure else ""


def restore(state: CheckedState, prepared: PreparedVm, vms: list[GuestVm], name: str, output: Path,
            alias_to: Callable[[str], str | None], *, load_only: bool = False) -> tuple[GuestVm, dict[str, Any]]:
    """Start ``prepared`` (a migration's source, in its own folder) from the checked state and prove it is the
    checked guest; the running VM (appended to ``vms``) and the record for ``details.restored``.
    RestoreFailed with the evidence otherwise. ``load_only``: stop at the loaded, paused VM (the check that
    a new state loads at all)."""
    record: dict[str, Any] = state.record(output)
    evidence: dict[str, Any] = {"restore_argv": prepared.live.argv}

    def failed(why: str, vm: GuestVm | None = None, *, loading: bool = False) -> RestoreFailed:
        if vm is not None:
            evidence.update(restore_stderr_tail=vm.process.stderr_tail(10), restore_console_tail=vm.console_tail(15))
        return RestoreFailed(f"restoring the checked source ({record['folder']}) failed: {why}",
                             {"restored": record, **evidence, **({"restore_phase": "load"} if loading else {})})

    machine = resolved_machine(prepared.live.argv, alias_to)
    ours = comparable_argv(prepared.live.argv, prepared.vm_dir, alias_to)
    theirs = comparable_argv(state.argv, state.folder, alias_to)
    if ours != theirs or machine != state.machine:
        diff = [f"{a!r} != {b!r}" for a, b in zip(ours, theirs, strict=False) if a != b][:3]
        raise failed(f"this source's argv is not the checked one's ({'; '.join(diff) or 'lengths differ'})")
    for image in state.images:  # the checked guest's disks, as they were at the save (sparse copies)
        done = subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(state.folder / image),
                               str(prepared.vm_dir / image)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise failed(f"copying the disk image {image}: {done.stderr.strip()}")
    started = time.monotonic()
    try:
        vm = launch(prepared, name, incoming=True, role="restored source")
    except LiveError as exc:
        raise failed(launch_failure(exc), loading=True) from None
    vms.append(vm)
    q = vm.process.qmp
    try:
        q.cmd("migrate-incoming", uri="exec:cat " + shlex.quote(os.path.relpath(state.state_file, prepared.vm_dir)))
        status = ""
        while time.monotonic() - started < LOAD_TIMEOUT and vm.process.is_running():
            status = str(q.cmd("query-status", timeout=5).get("status", ""))
            if status != "inmigrate":
                break
            time.sleep(0.05)
        if status != "paused":
            raise failed(f"QEMU is {status or 'gone'} after the load, not paused"
                         + ("" if vm.process.is_running() else f" ({vm.process.exit.describe()})"), vm, loading=True)
        record["load_s"] = round(time.monotonic() - started, 3)
        if load_only:
            return vm, record
        vm.reader.feed(state.console)  # the checked guest's console so far: its boot report, its heartbeats
        q.cmd("cont")
        vm.cont_at = time.monotonic()
    except QmpError as exc:
        raise failed(f"QMP: {exc.message}", vm, loading=vm.cont_at is None) from None
    checks = [f"argv is the checked VM's (machine {machine})", f"loaded in {record['load_s']:.2f} s"]
    saved = state.heartbeat
    inits = vm.report.inits

    def beat(report: Any) -> bool:
        return report.inits > inits or (report.last_heartbeat is not None
                                        and (saved is None or report.last_heartbeat > saved))

    waited = vm.wait_report(beat, SETTLE_TIMEOUT)
    if vm.report.inits > inits:
        raise failed("the restored guest booted again (GUEST-INIT on its console)", vm)
    if not waited.ok:
        raise failed(f"no heartbeat after HB {saved} within {SETTLE_TIMEOUT:g} s ({waited.reason})", vm)
    record["heartbeat"] = vm.report.last_heartbeat
    checks.append(f"heartbeat HB {vm.report.last_heartbeat} after HB {saved} (the save), no new boot")
    devs = devices(prepared.live.argv)
    for standby, primary in failover_pairs(devs):
        sid = standby.get("id")
        if q.wait_event("FAILOVER_NEGOTIATED", SETTLE_TIMEOUT,
                        match=lambda e, s=sid: e.get("data", {}).get("device-id") == s) is None:
            raise failed(f"no FAILOVER_NEGOTIATED for {sid} within {SETTLE_TIMEOUT:g} s", vm)
        seen = state.reports
        back = partial(failover_team_enslaved, mac=str(standby.get("mac", "")), primary_pci_listed=True)
        if not vm.wait_report(lambda r, seen=seen, back=back: len(r.reports) > seen and back(r), SETTLE_TIMEOUT).ok:
            raise failed(f"the guest did not report the primary {primary.get('id')} enslaved again within "
                         f"{SETTLE_TIMEOUT:g} s of the restore", vm)
        checks.append(f"primary {primary.get('id')} plugged back and enslaved (the save unplugged it)")
    cross = qmp_cross_check(vm, devs, record)
    if cross:
        raise failed("; ".join(cross), vm)
    checks.append("QMP peripheral and query-pci agree with the guest's report")
    record.update(checks=checks, seconds=round(time.monotonic() - started, 3))
    return vm, record


@dataclass
class Resumable:
    """A migration's source after the migration passed: stopped by it (``postmigrate``), its destination stopped,
    kept so that the next migration of its key (case, build, machine type; same argv) resumes it with ``cont``
    instead of starting a source again (a restore, or a boot)."""

    vm: GuestVm
    prepared: PreparedVm  # the migration's source that started it: its folder holds its console and disks
    restored: dict[str, Any]  # ``details.restored`` when it was restored from a checked state, else empty
    served: list[str]  # the migrations it was the source of, in order ("7.2.22->10.0.2 @pc-q35-7.2 (folder)")
    heartbeat: int | None  # the guest's last heartbeat when its last migration completed (or it was paused)
    cpu_seconds: float = 0.0  # QEMU's CPU s when it was kept (what the next migration's own share starts from)
    #: the run state QEMU waits in: ``postmigrate`` after a migration, ``paused`` for the boot stage's checked VM
    #: handed over (``hand_over``), which no migration has served yet (``served`` empty)
    status: str = "postmigrate"


def hand_over(vm: GuestVm, prepared: PreparedVm) -> Resumable:
    """The boot stage's checked VM, paused (``stop``) with its console read up to the pause, for its key's one
    migration to ``resume``; LiveError when QEMU does not pause."""
    vm.expect_stop = True
    try:
        vm.process.qmp.cmd("stop", timeout=5)
        status = str(vm.process.qmp.cmd("query-status", timeout=5).get("status", ""))
    except QmpError as exc:
        raise LiveError(f"pausing the checked guest: {exc.message}") from None
    if status != "paused":
        raise LiveError(f"pausing the checked guest: QEMU is {status}, not paused")
    vm.reader.poll_file(vm.console)  # its console up to the pause: the last heartbeat before it
    return Resumable(vm, prepared, {}, [], vm.report.last_heartbeat, vm.cpu_seconds(), status="paused")


def resume(source: Resumable, prepared: PreparedVm, alias_to: Callable[[str], str | None]
           ) -> tuple[GuestVm, dict[str, Any]]:
    """``cont`` a kept source for the migration whose source ``prepared`` is, and prove it is still the guest
    that was checked: its argv is the one ``prepared`` runs, QEMU goes from ``postmigrate`` to running (``cont``
    re-activates the disks the completed migration inactivated: qmp_cont in 5.2, 7.2 and 10.0 alike), the
    heartbeat goes on after the last one before that migration with no GUEST-INIT, and QMP agrees with the
    guest's report. The record for ``details.resumed``; RestoreFailed with the evidence otherwise."""
    vm = source.vm
    record: dict[str, Any] = {"after": list(source.served), "folder": source.prepared.vm_dir.name,
                              "heartbeat_before": source.heartbeat}
    what = "kept source" if source.served else "boot stage's checked VM (handed over)"

    def failed(why: str) -> RestoreFailed:
        return RestoreFailed(f"resuming the {what} ({source.prepared.vm_dir.name}) failed: {why}",
                             {"resumed": record, "resume_stderr_tail": vm.process.stderr_tail(10),
                              "resume_console_tail": vm.console_tail(15)})

    ours = comparable_argv(prepared.live.argv, prepared.vm_dir, alias_to)
    theirs = comparable_argv(source.prepared.live.argv, source.prepared.vm_dir, alias_to)
    if ours != theirs:
        raise failed("this source's argv is not the kept one's")
    started = time.monotonic()
    inits = vm.report.inits
    try:
        status = str(vm.process.qmp.cmd("query-status", timeout=5).get("status", ""))
        if status != source.status:
            raise failed(f"QEMU is {status}, not {source.status}")
        vm.process.qmp.cmd("cont")
        vm.expect_stop = False
        vm.cont_at = time.monotonic()
    except QmpError as exc:
        raise failed(f"QMP: {exc.message}") from None
    saved = source.heartbeat

    def beat(report: Any) -> bool:
        return report.inits > inits or (report.last_heartbeat is not None
                                        and (saved is None or report.last_heartbeat > saved))

    waited = vm.wait_report(beat, SETTLE_TIMEOUT)
    if vm.report.inits > inits:
        raise failed("the guest booted again (GUEST-INIT on its console)")
    if not waited.ok:
        raise failed(f"no heartbeat after HB {saved} within {SETTLE_TIMEOUT:g} s ({waited.reason})")
    checks = [f"argv is the kept source's; cont from postmigrate after {len(source.served)} passed migration(s)"
              if source.served else "argv is the boot stage's checked VM's; cont from paused (paused right after "
                                    "its boot checks passed)",
              f"heartbeat HB {vm.report.last_heartbeat} after HB {saved} "
              f"({'its last migration' if source.served else 'the pause'}), no new boot"]
    cross = qmp_cross_check(vm, devices(prepared.live.argv), {})
    if cross:
        raise failed("; ".join(cross))
    checks.append("QMP peripheral and query-pci agree with the guest's report")
    record.update(heartbeat=vm.report.last_heartbeat, checks=checks, seconds=round(time.monotonic() - started, 3))
    return vm, record


class CheckedStates:
    """The checked states of one run, each made at most once (threads needing one being made wait for it).

    ``uses`` counts the migrations planned per key: a key used once is not worth a save and a restore
    (its migration boots as before), and the state files of a key are deleted after its last use. Within
    a key, states are told apart by their argv (``argv_digest``): a source restores only its own argv's."""

    def __init__(self, uses: Counter[Key] | None = None) -> None:
        self.uses: Counter[Key] = uses or Counter()
        self._lock = threading.Lock()
        self._states: dict[tuple[Key, str], CheckedState | SourceDown | str] = {}  # a str: why there is none
        self._making: dict[tuple[Key, str], threading.Lock] = {}
        self._findings: list[Any] = []  # StageResults of states their own build cannot load
        self._idle: dict[tuple[Key, str], list[Resumable]] = {}  # kept sources, paused, per key and argv
        self._handed: dict[tuple[Key, str], Resumable] = {}  # boot stage VMs handed over, per key and argv
        self._busy: Counter[tuple[Key, str]] = Counter()  # migrations running that may keep their source
        self._kept = threading.Condition(self._lock)

    def finding(self, result: Any) -> None:
        """A result of its own (a state its build cannot load), for the runner to write."""
        with self._lock:
            self._findings.append(result)

    def take_findings(self) -> list[Any]:
        with self._lock:
            found, self._findings = self._findings, []
        return found

    def wanted(self, key: Key) -> bool:
        with self._lock:
            return self.uses[key] > 0

    def add(self, key: Key, digest: str, state: CheckedState | SourceDown | str) -> None:
        with self._lock:
            self._states[(key, digest)] = state

    def get(self, key: Key, digest: str, make: Callable[[], CheckedState | str] | None = None
            ) -> CheckedState | SourceDown | str | None:
        """The state of ``key`` for an argv (a str: why there is none; a SourceDown: the boot stage's source never
        came up); made by ``make`` when missing and used more than once (one thread makes it, the others wait);
        else None."""
        with self._lock:
            found = self._states.get((key, digest))
            if found is not None or make is None or self.uses[key] < 2:
                return found
            lock = self._making.setdefault((key, digest), threading.Lock())
        with lock:
            with self._lock:
                found = self._states.get((key, digest))
            if found is None:
                try:
                    found = make()
                except Exception as exc:  # a suite problem making it: its migrations boot their own source
                    found = f"making the checked source failed: {type(exc).__name__}: {exc}"
                self.add(key, digest, found)
            return found

    def hand(self, key: Key, digest: str, source: Resumable) -> bool:
        """The boot stage hands its checked VM (paused: ``hand_over``) to the one migration of ``key``; False
        when the key has more (they share a saved state) or HANDED_MAX wait already: the caller then saves it."""
        with self._lock:
            if self.uses[key] != 1 or (key, digest) in self._handed or len(self._handed) >= HANDED_MAX:
                return False
            self._handed[(key, digest)] = source
            return True

    def take(self, key: Key, digest: str) -> Resumable | None:
        """The VM the boot stage handed over for this migration's argv, or None."""
        with self._lock:
            return self._handed.pop((key, digest), None)

    def lend(self, key: Key, digest: str, wait: float = 0.0) -> Resumable | None:
        """A kept source of ``key`` for this argv, or None: then the caller starts one. Either way the caller may
        keep its source afterwards and must call ``keep`` when its migration is over. When none is kept but
        another migration of the key is running (and may keep its source), wait up to ``wait`` s for it."""
        deadline = time.monotonic() + wait
        with self._kept:
            while not self._idle.get((key, digest)) and self._busy[(key, digest)] > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._kept.wait(left)
            self._busy[(key, digest)] += 1
            idle = self._idle.get((key, digest))
            return idle.pop() if idle else None

    def keep(self, key: Key, digest: str, source: Resumable | None) -> bool:
        """A migration that ``lend`` was asked for is over: keep its ``source`` (passed, postmigrate, its
        destination stopped) for the next one of ``key`` (the migration is not counted ``used`` yet). False
        when there is none, no migration of the key is left, or IDLE_SOURCES are kept already: the caller
        stops it."""
        with self._kept:
            self._busy[(key, digest)] -= 1
            kept = source is not None and self.uses[key] > 1 \
                and sum(len(v) for v in self._idle.values()) < IDLE_SOURCES
            if kept and source is not None:
                self._idle.setdefault((key, digest), []).append(source)
            self._kept.notify_all()
            return kept

    def used(self, key: Key) -> None:
        """One planned migration of ``key`` is done: the last one deletes its state files and stops the sources
        kept for it."""
        with self._lock:
            self.uses[key] -= 1
            done = [s for (k, _), s in self._states.items() if k == key and isinstance(s, CheckedState)] \
                if self.uses[key] <= 0 else []
            kept = [r for (k, _), idle in self._idle.items() if k == key for r in idle] if self.uses[key] <= 0 else []
            for found in [k for k in self._idle if k[0] == key] if kept else []:
                del self._idle[found]
            for found in [k for k in self._handed if k[0] == key] if self.uses[key] <= 0 else []:
                kept.append(self._handed.pop(found))  # handed over to a migration that never took it
        for state in done:
            state.state_file.unlink(missing_ok=True)
        for source in kept:
            source.vm.stop()

    def close(self) -> None:
        """The run is over: delete every state file left, stop every source still kept."""
        with self._lock:
            states = [s for s in self._states.values() if isinstance(s, CheckedState)]
            kept = [r for idle in self._idle.values() for r in idle] + list(self._handed.values())
            self._idle.clear()
            self._handed.clear()
        for state in states:
            state.state_file.unlink(missing_ok=True)
        for source in kept:
            source.vm.stop()
