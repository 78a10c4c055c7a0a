"""The migrate stage: a case booted on a source QEMU, migrated live to a destination QEMU.

For one case and a (source, destination) pair of targets of one arch, the same
build or two builds:

1. plan: both builds can boot the case; across builds the machine type is
   pinned to the newest versioned type both have (``pc-q35-7.2``), the CPU
   model must be known to both, and a flag the older build lacks is a skip
   that names it;
2. the source boots exactly as in the boot stage (prepare -> start -> check of
   conformance/live/boot.py); its checks must pass first;
3. the destination is prepared the same way for its own capabilities, in its
   own folder with its own console, sharing the source's disk images, and
   starts with ``-incoming defer`` and ``-S`` (as libvirt starts one);
4. ``migrate-incoming`` listens on a UNIX socket in the destination's folder,
   ``migrate`` starts the stream; every status (from MIGRATION events on both
   sides) and every event is recorded with its time, and each wait has a
   deadline (MigrationTimeouts). A deadline that passes cancels the migration
   and checks that the source runs again with its guest alive (and, with
   failover, that the primary came back);
5. pass means: the source ends ``postmigrate``; the destination, loaded and
   still paused, holds the same guest RAM as the stopped source (a difference
   fails, unless a known bug explains it; LPIs set pending while it loaded are
   device state: conformance/live/ramcheck.py), and after ``cont`` ends
   ``running``; the guest's heartbeat goes on in the destination's console
   without a restart; the guest's view of its devices is unchanged, or its
   new report passes the boot checks (failover: the primary is plugged back after
   FAILOVER_NEGOTIATED and enslaved again); QMP on the destination agrees.
   The source's word alone is never enough: a destination that failed to load
   the stream is a fail with the destination's own error.

``migrate_vms`` is the core over two running GuestVms, so a test can write a
scenario (a refused stream, a cancel in wait-unplug, a killed side) in a few lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from conformance.argv.options import devices, options
from conformance.caps.model import Capabilities
from conformance.cases import Case, Catalogue, plan
from conformance.errors import ConformanceError, LiveError
from conformance.live.adapt import NeedsHardware
from conformance.live.boot import (
    BOOT_TIMEOUT,
    BootRun,
    NotUp,
    PreparedVm,
    Target,
    boot_skip,
    check_guest,
    explain,
    launch,
    launch_failure,
    prepare_vm,
    qmp_cross_check,
    vm_artifacts,
)
from conformance.live.checked import (
    STATE_FILE,
    CheckedState,
    CheckedStates,
    Key,
    RestoreFailed,
    Resumable,
    SourceDown,
    argv_digest,
    hand_over,
    restore,
    resume,
    same_ram,
    save,
    saved_live,
)
from conformance.live.checks import MachineFacts, check_report, failover_pairs, failover_team_enslaved
from conformance.live.ramcheck import compare_ram, ram_region_names
from conformance.live.vm import GuestVm
from conformance.machines import FROM_CASE, FROM_GIVEN, FROM_NEWEST, deprecated_in, direction, pinned_machine
from conformance.qemu.qmp import QmpCommandFailed, QmpError
from conformance.results.records import StageResult

TERMINAL = ("completed", "failed", "cancelled")


def _setting(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class MigrationTimeouts:
    """Deadlines, in seconds (research/live-lab.md: what fits TCG on 2 cores), each one a setting."""

    migration: float = 30.0  # migrate -> completed            QEMU_CONFORMANCE_MIGRATE_TIMEOUT
    wait_unplug: float = 15.0  # time spent in wait-unplug       QEMU_CONFORMANCE_WAIT_UNPLUG_TIMEOUT
    replug: float = 10.0  # primary back (destination, cancel)  QEMU_CONFORMANCE_REPLUG_TIMEOUT
    heartbeat: float = 10.0  # the guest's heartbeat after a switch  QEMU_CONFORMANCE_HEARTBEAT_TIMEOUT

    @classmethod
    def from_env(cls) -> MigrationTimeouts:
        return cls(_setting("QEMU_CONFORMANCE_MIGRATE_TIMEOUT", cls.migration),
                   _setting("QEMU_CONFORMANCE_WAIT_UNPLUG_TIMEOUT", cls.wait_unplug),
                   _setting("QEMU_CONFORMANCE_REPLUG_TIMEOUT", cls.replug),
                   _setting("QEMU_CONFORMANCE_HEARTBEAT_TIMEOUT", cls.heartbeat))


#: bytes/s: what libvirt lets a migration use unless told otherwise (its QEMU_DOMAIN_MIG_BANDWIDTH_MAX, INT64_MAX
#: rounded down to MiB, set as max-bandwidth before every migrate), against QEMU's own 128 MiB/s, which made the
#: stream of a 256 MiB guest take 0.7 s
LIBVIRT_BANDWIDTH = (2**63 - 1) // 2**20 * 2**20


def stage_bandwidth() -> int | None:
    """max-bandwidth (bytes/s) the migrate stage sets on the source: libvirt's default (LIBVIRT_BANDWIDTH);
    QEMU_CONFORMANCE_MIGRATE_BANDWIDTH=MIB sets MiB/s instead, 0 leaves QEMU's own default (None)."""
    value = os.environ.get("QEMU_CONFORMANCE_MIGRATE_BANDWIDTH", "").strip()
    if not value:
        return LIBVIRT_BANDWIDTH
    try:
        mib = int(value)
    except ValueError:
        return LIBVIRT_BANDWIDTH
    return min(mib * 2**20, LIBVIRT_BANDWIDTH) if mib > 0 else None


def pair_label(source: Target, destination: Target) -> str:
    """``7.2.22-x86_64->10.0.2-x86_64``: how results, ids and folders name a pair."""
    return f"{source.caps.version}-{source.caps.arch}->{destination.caps.version}-{destination.caps.arch}"


# --- plan ---------------------------------------------------------------------------------------

#: CPU models whose features follow the QEMU build (and accelerator) they run on: a migration between
#: versions loads one version's CPU state into another's (measured: 7.2 -> 5.2 with -cpu max panics the guest).
VERSION_BOUND_CPUS = frozenset({"max", "host"})


def _cpu_model(argv: list[str]) -> str | None:
    for _, opt, value in options(argv):
        if opt == "-cpu" and value:
            return value.split(",")[0]
    return None


def migrate_skip(case: Case, source: Target, destination: Target) -> str | None:
    """Why this case cannot be migrated between these targets, or None."""
    if source.caps.arch != destination.caps.arch:
        return f"{source.caps.arch} cannot migrate to {destination.caps.arch}"
    if case.live.get("migrate") is False:
        return f"kept out of migration on purpose: {case.live.get('migrate_why', 'see templates/cases.toml')}"
    for side, target in (("source", source), ("destination", destination)):
        why = boot_skip(case, target)
        if why:
            return f"{side} QEMU {target.caps.version}: {why}"
        what = plan(case, target.caps)
        if not what.run:
            return f"{side} QEMU {target.caps.version}: {what.skip_reason}"
    return None


def pair_folders(output: Path, case: Case, source: Target, destination: Target, machine: str = ""
                 ) -> tuple[Path, Path]:
    """(source, destination) folders of one migration, emptied: a re-run into the same output replaces them.
    A migration under a given machine type (--machines) has its own (``...-pc-q35-5.2``)."""
    tag = hashlib.sha1(f"{source.binary}->{destination.binary}".encode()).hexdigest()[:6]
    name = f"migrate-{pair_label(source, destination).replace('>', '')}-{tag}" + (f"-{machine}" if machine else "")
    pair = output / "live" / case.name / name
    if pair.exists():
        shutil.rmtree(pair)
    (pair / "source").mkdir(parents=True)
    (pair / "destination").mkdir()
    return pair / "source", pair / "destination"


# --- the core: two running VMs ------------------------------------------------------------------

@dataclass
class Migration:
    """What a migration did: statuses with times (seconds from ``migrate``), events of both sides,
    query-migrate's figures, and the verdict."""

    verdict: str = "error"
    reason: str = "not run"
    timeline: list[dict[str, Any]] = field(default_factory=list)  # {"side", "status", "t"}
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # side -> events with "t"
    stats: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    record: Callable[[], None] = lambda: None  # takes in the events that arrived since (set by migrate_vms)

    def statuses(self, side: str) -> list[str]:
        return [s["status"] for s in self.timeline if s["side"] == side]


WATCHED = ("MIGRATION", "MIGRATION_PASS", "UNPLUG_PRIMARY", "FAILOVER_NEGOTIATED", "DEVICE_DELETED", "STOP",
           "RESUME", "SHUTDOWN", "GUEST_PANICKED")


def _event_time(event: dict[str, Any], t0_wall: float) -> float:
    stamp = event.get("timestamp") or {}
    return round(stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6 - t0_wall, 3)


def migrate_vms(source: GuestVm, destination: GuestVm, *, failover: list[tuple[dict[str, Any], dict[str, Any]]],
                timeouts: MigrationTimeouts, on_status: Callable[[str, str], None] | None = None,
                has_driver: Callable[[str], bool] = lambda _module: False, bandwidth: int | None = None
                ) -> Migration:
    """Migrate a running, checked source into a destination started with ``-incoming defer``.

    ``has_driver(module)`` tells which devices the guest kernel drives (the guest's own knowledge,
    as in the boot checks); by default none, so a device without a driver is a note, never a failure.

    Returns the Migration with verdict pass/fail/skip (a migration blocker is a skip with QEMU's
    reason); never raises for a QEMU problem. ``on_status(side, status)`` is called on each new
    status (a test cancels or kills from there). ``bandwidth``: max-bandwidth in bytes/s for the source
    (None: QEMU's default; the stage passes stage_bandwidth()). The caller stops both VMs.
    """
    mig = Migration()
    src_q, dst_q = source.process.qmp, destination.process.qmp
    listeners = {"source": src_q.listen(WATCHED, replay=False), "destination": dst_q.listen(WATCHED, replay=False)}
    negotiated = bool(failover) and any(e.get("event") == "FAILOVER_NEGOTIATED" for e in src_q.events)
    paused = _status(source) == "paused"
    if paused:
        mig.checks.append("the source guest was paused before the migration")
    socket_name = "migrate.sock"
    try:
        # events: MIGRATION on both sides; return-path: the destination tells the source when it cannot
        # load the stream, so the source fails and resumes its guest instead of ending "completed"
        for q in (src_q, dst_q):
            q.cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True},
                                                             {"capability": "return-path", "state": True}])
        if bandwidth is not None:
            src_q.cmd("migrate-set-parameters", **{"max-bandwidth": bandwidth})
            mig.evidence["max_bandwidth"] = bandwidth
        dst_q.cmd("migrate-incoming", uri=f"unix:{socket_name}")  # relative: QEMU runs in its VM folder
        source.expect_stop = destination.expect_stop = True
        t0_wall, t0 = time.time(), time.monotonic()
        uri = f"unix:{os.path.relpath(destination.process.workdir / socket_name, source.process.workdir)}"
        src_q.cmd("migrate", uri=uri)
    except QmpCommandFailed as exc:
        mig.verdict, mig.reason = "skip", f"QEMU refuses to migrate: {exc.desc}"
        return mig
    except LiveError as exc:  # a monitor gone, a QEMU that died before the stream
        mig.verdict, mig.reason = "fail", f"could not start the migration: {exc.message}"
        return mig
    seen = {"source": "", "destination": ""}  # the status each side is in, as far as we know
    last_event = {"source": "", "destination": ""}  # the status of each side's last MIGRATION event
    deadline = t0 + timeouts.migration
    unplug_since: float | None = None
    problem = ""
    last_query = 0.0
    def record() -> None:
        for side, listener in listeners.items():
            for event in listener.drain():
                t = _event_time(event, t0_wall)
                mig.events.setdefault(side, []).append({"t": t, "event": event.get("event"),
                                                        **({"data": event["data"]} if event.get("data") else {})})
                if event.get("event") == "MIGRATION":
                    status = event.get("data", {}).get("status", "")
                    if status == last_event[side]:
                        continue
                    last_event[side] = status
                    if any(x["side"] == side and x["status"] == status for x in mig.timeline):
                        continue  # already known from query-migrate
                    mig.timeline.append({"side": side, "status": status, "t": t})
                    # the query-migrate fallback may have seen the end before this event came in
                    mig.timeline.sort(key=lambda s: s["t"])
                    if seen[side] not in TERMINAL:
                        seen[side] = status
                        if on_status:
                            on_status(side, status)

    mig.record = record
    while True:
        record()
        now = time.monotonic()
        if seen["source"] == "wait-unplug" and unplug_since is None:
            unplug_since = now
        if now - last_query > 0.5 and seen["source"] not in TERMINAL:  # a missed event must not hang us
            last_query = now
            with contextlib.suppress(QmpError):
                status = src_q.cmd("query-migrate", timeout=5).get("status", "")
                if status and status != seen["source"] and status in TERMINAL:
                    seen["source"] = status
                    mig.timeline.append({"side": "source", "status": status, "t": round(time.time() - t0_wall, 3),
                                         "from": "query-migrate"})
        if seen["source"] in TERMINAL:
            break
        if not source.process.is_running():
            problem = f"the source QEMU died during the migration ({source.process.exit.describe()})"
            break
        if not destination.process.is_running() and seen["source"] not in ("completed",):
            # the source may still be sending into a broken pipe: let it notice, briefly
            if not _source_notices(listeners["source"], mig, seen, t0_wall, 3.0):
                problem = f"the destination QEMU died during the migration ({destination.process.exit.describe()})"
                break
            continue
        if unplug_since is not None and seen["source"] == "wait-unplug" and now - unplug_since > timeouts.wait_unplug:
            problem = (f"wait-unplug timeout: still in wait-unplug after {timeouts.wait_unplug:g} s"
                       + (" with the guest paused" if paused else ""))
            break
        if now > deadline:
            problem = f"migration timeout: status {seen['source'] or 'none'} after {timeouts.migration:g} s"
            break
        src_q.poll(0.05)  # returns at the first event: the wait only spaces the looks
    mig.evidence["source_status_final"] = seen["source"]
    if problem:
        return _cancelled(mig, problem, source, destination, failover, negotiated, timeouts)
    return _judge(mig, source, destination, failover, negotiated, timeouts, t0, has_driver)


def _source_notices(listener: Any, mig: Migration, seen: dict[str, str], t0_wall: float, wait: float) -> bool:
    """After the destination died: does the source reach a terminal status within ``wait`` s?"""
    event = listener.get(wait, match=lambda e: e.get("event") == "MIGRATION"
                         and e.get("data", {}).get("status") in TERMINAL)
    if event is None:
        return False
    status = event["data"]["status"]
    seen["source"] = status
    mig.timeline.append({"side": "source", "status": status, "t": _event_time(event, t0_wall)})
    return True


def _query_stats(vm: GuestVm) -> dict[str, Any]:
    """query-migrate's figures; read again shortly after completion (right at it some read 0)."""
    try:
        info = vm.process.qmp.cmd("query-migrate", timeout=5)
    except QmpError:
        return {}
    ram = info.get("ram", {})
    stats = {k: info.get(k) for k in ("status", "total-time", "downtime", "setup-time", "error-desc")
             if info.get(k) is not None}
    stats.update({f"ram-{k}": ram[k] for k in ("transferred", "total", "duplicate", "normal") if k in ram})
    return stats


def _status(vm: GuestVm) -> str:
    try:
        return str(vm.process.qmp.cmd("query-status", timeout=5).get("status"))
    except QmpError as exc:
        return f"unknown ({exc.message})"


def _side_error(vm: GuestVm) -> str:
    """A dead or failing side's own words: exit and the last stderr line."""
    lines = [line.strip() for line in vm.process.stderr_tail(8).splitlines() if line.strip()]
    said = [line for line in lines if "warning:" not in line][-2:] or lines[-1:]
    state = "running" if vm.process.is_running() else vm.process.exit.describe()
    return f"{state}" + (f": {' | '.join(said)}" if said else "")


def _heartbeat_goes_on(vm: GuestVm, after: int | None, timeout: float) -> tuple[bool, str]:
    """A heartbeat numbered after ``after`` on the VM's console, with no new boot of the guest."""
    vm.reader.poll_file(vm.console)
    inits = vm.report.inits  # the source booted once; a destination's console starts empty

    def beat(report: Any) -> bool:
        return report.inits > inits or (report.last_heartbeat is not None
                                        and (after is None or report.last_heartbeat > after))

    waited = vm.wait_report(beat, timeout)
    if vm.report.inits > inits:
        return False, "the guest restarted (GUEST-INIT on the console)"
    if not waited.ok:
        return False, f"no heartbeat after HB {after} within {timeout:g} s ({waited.reason})"
    return True, f"heartbeat HB {vm.report.last_heartbeat} after HB {after}"


def _note_release_without_wait(source: GuestVm, failover: list[tuple[dict[str, Any], dict[str, Any]]],
                               unplugged: str, mig: Migration) -> None:
    """No wait-unplug: QEMU found no unplug pending when setup ended, because the guest had already
    ejected the primary (ACPI hotplug takes tens of ms). QEMU keeps a failover primary realized on the
    source, to plug it back if the migration fails, so query-pci still lists it: the evidence is the
    guest's own report on the source console (written before the switch) without the primary."""
    source.reader.poll_file(source.console)
    report = source.report
    kept = [str(p.get("id")) for s, p in failover
            if not report.reports or failover_team_enslaved(report, str(s.get("mac", "")))]
    if kept:
        mig.checks.append(f"source: UNPLUG_PRIMARY {unplugged}; no wait-unplug (QEMU saw no unplug pending when "
                          f"setup ended); the guest reported the release of {', '.join(kept)} only after the switch")
    else:
        mig.checks.append(f"source: UNPLUG_PRIMARY {unplugged}; released before setup ended (no wait-unplug "
                          "needed): the guest's report on the source has no primary")


def _judge(mig: Migration, source: GuestVm, destination: GuestVm,
           failover: list[tuple[dict[str, Any], dict[str, Any]]], negotiated: bool,
           timeouts: MigrationTimeouts, t0: float, has_driver: Callable[[str], bool]) -> Migration:
    """The source reached a terminal status: check both sides (the source's word is not enough)."""
    final = mig.evidence["source_status_final"]
    source.reader.poll_file(source.console)  # the source's last heartbeat before the switch
    if final != "completed":
        time.sleep(0.2)
        mig.stats = _query_stats(source)
        notes = [f"migration {final} on the source"
                 + (f": {mig.stats['error-desc']}" if mig.stats.get("error-desc") else "")]
        if not destination.process.is_running():
            notes.append(f"destination {_side_error(destination)}")
        notes += _source_recovers(source, failover, negotiated, timeouts)
        mig.record()
        mig.verdict, mig.reason = "fail", "; ".join(notes)
        return mig
    failures: list[str] = []
    if failover and negotiated:
        src = mig.statuses("source")
        unplugs = [e for e in mig.events.get("source", []) if e["event"] == "UNPLUG_PRIMARY"]
        unplugged = ", ".join(str(e.get("data", {}).get("device-id")) for e in unplugs)
        if not unplugs:
            failures.append("failover: the source never sent UNPLUG_PRIMARY")
        elif "wait-unplug" in src:
            if "active" in src and src.index("active") < src.index("wait-unplug"):
                failures.append("failover: active before wait-unplug")
            else:
                mig.checks.append(f"source: UNPLUG_PRIMARY {unplugged}, wait-unplug before active")
        else:
            _note_release_without_wait(source, failover, unplugged, mig)
    elif failover:
        if any(e["event"] == "UNPLUG_PRIMARY" for e in mig.events.get("source", [])):
            failures.append("failover not negotiated, yet the source sent UNPLUG_PRIMARY")
        else:
            mig.checks.append("failover not negotiated by the guest: migrated without UNPLUG_PRIMARY")
    src_status = _settled(source, until="postmigrate", wait=2.0)  # MIGRATION completed comes first
    if src_status != "postmigrate":
        failures.append(f"source ends {src_status}, not postmigrate")
    dst_status = _settled(destination)
    if not destination.process.is_running():
        mig.stats = _query_stats(source)
        failures.append(f"the source says completed, but the destination {_side_error(destination)}")
        mig.verdict, mig.reason = "fail", "; ".join(failures)
        return mig
    ram_note = ""  # a difference the check accepts (conformance/live/ramcheck.py), said in the reason
    if dst_status == "paused":  # loaded, not run yet (-S): compare its RAM with the stopped source's
        ram = compare_ram(source, destination, ram_region_names(destination.process.argv))
        mig.evidence["ram"] = ram.record()
        failure, check, ram_note = ram.verdict()
        if failure:  # a fail, unless a known bug explains it (explain_pair matches this line)
            failures.append(failure)
        else:
            mig.checks.append(check)
        with contextlib.suppress(QmpError):
            destination.process.qmp.cmd("cont")
        dst_status = _settled(destination, until="running")
    mig.stats = _query_stats(source)  # read a while after completion: right at it some figures read 0
    if dst_status != "running":
        failures.append(f"destination ends {dst_status}, not running")
    ok, beat = _heartbeat_goes_on(destination, source.report.last_heartbeat, timeouts.heartbeat)
    (mig.checks if ok else failures).append(f"destination: {beat}")
    failures += _destination_devices(mig, source, destination, failover, negotiated, timeouts, has_driver)
    mig.record()
    if failures:
        mig.verdict, mig.reason = "fail", "; ".join(failures)
        return mig
    total = mig.stats.get("total-time")
    downtime = mig.stats.get("downtime")
    mig.verdict = "pass"
    mig.reason = (f"migrated in {total / 1000:.2f} s" if isinstance(total, int | float) else "migrated") \
        + (f", downtime {downtime} ms" if downtime is not None else "") + f"; {len(mig.checks)} checks passed" \
        + (f"; note: RAM differs only by {ram_note}" if ram_note else "")
    return mig


def _settled(vm: GuestVm, until: str = "paused", wait: float = 5.0) -> str:
    """A side's status once the migration has settled there: ``until`` or running, or whatever it is after
    ``wait`` s. Both sides get there a moment after the source reports completed: the destination once it
    has loaded the stream, the source once its main loop has left finish-migrate for postmigrate."""
    status = ""
    end = time.monotonic() + wait
    while time.monotonic() < end and vm.process.is_running():
        status = _status(vm)
        if status in (until, "running"):
            break
        time.sleep(0.05)
    return status


def _destination_devices(mig: Migration, source: GuestVm, destination: GuestVm,
                         failover: list[tuple[dict[str, Any], dict[str, Any]]], negotiated: bool,
                         timeouts: MigrationTimeouts, has_driver: Callable[[str], bool]) -> list[str]:
    """Failover re-plug, then the guest's view and QMP's on the destination."""
    failures: list[str] = []
    q = destination.process.qmp
    for standby, primary in failover if negotiated else []:
        sid = standby.get("id")
        if q.wait_event("FAILOVER_NEGOTIATED", timeouts.replug,
                        match=lambda e, s=sid: e.get("data", {}).get("device-id") == s) is None:
            failures.append(f"destination: no FAILOVER_NEGOTIATED for {sid} within {timeouts.replug:g} s")
            continue
        back = partial(failover_team_enslaved, mac=str(standby.get("mac", "")))
        if destination.wait_report(back, timeouts.replug).ok:
            mig.checks.append(f"destination: primary {primary.get('id')} plugged back and enslaved")
        else:
            failures.append(f"destination: the guest did not enslave the primary {primary.get('id')} again "
                            f"within {timeouts.replug:g} s")
    argv = destination.process.argv
    hidden = set() if negotiated else {str(primary.get("id")) for _, primary in failover}
    devs = [d for d in devices(argv) if str(d.get("id")) not in hidden]  # QEMU keeps these unplugged
    if hidden:
        mig.checks.append(f"destination: primary {', '.join(sorted(hidden))} stays hidden (failover not negotiated)")
    report = destination.report if destination.report.latest is not None else source.report
    if destination.report.latest is not None:  # the guest re-reported on the destination: check it all
        checks = check_report(report, devs, has_driver, MachineFacts.from_argv(argv))
        failures += [f"destination: {f}" for f in checks.failures]
        mig.checks.append(f"destination: the guest's new report passes {len(checks.checked)} checks")
    else:
        mig.checks.append("destination: the guest's view of its devices is unchanged (no re-report)")
    cross = qmp_cross_check(destination, devs, mig.evidence, report=report)
    failures += [f"destination: {f}" for f in cross]
    if not cross:
        mig.checks.append("destination: QMP peripheral and query-pci agree with the guest")
    return failures


def _source_recovers(source: GuestVm, failover: list[tuple[dict[str, Any], dict[str, Any]]], negotiated: bool,
                     timeouts: MigrationTimeouts, *, after: str = "", migration: str = "") -> list[str]:
    """After a failed or cancelled migration: is the source running, its guest alive and, with failover,
    the primary back in the guest? One note each."""
    run_state = _status(source)
    ok, beat = _heartbeat_goes_on(source, source.report.last_heartbeat, timeouts.heartbeat) \
        if run_state == "running" else (False, f"source {run_state}")
    prefix = f"after {after}: migration {migration or '?'}, " if after else ""
    notes = [f"{prefix}source {run_state}, guest {'alive' if ok else 'NOT alive (' + beat + ')'}"]
    for standby, primary in failover if negotiated and ok else []:
        came_back = source.wait_report(partial(failover_team_enslaved, mac=str(standby.get("mac", ""))),
                                       timeouts.replug).ok
        notes.append(f"primary {primary.get('id')} {'came back' if came_back else 'did NOT come back'}")
    return notes


def _cancelled(mig: Migration, problem: str, source: GuestVm, destination: GuestVm,
               failover: list[tuple[dict[str, Any], dict[str, Any]]], negotiated: bool,
               timeouts: MigrationTimeouts) -> Migration:
    """A deadline passed or a side died: cancel, then check that the source and its guest are back."""
    notes = [problem]
    if source.process.is_running():
        try:
            source.process.qmp.cmd("migrate_cancel", timeout=5)
        except QmpError as exc:
            notes.append(f"migrate_cancel: {exc.message}")
        end = time.monotonic() + 5.0
        status = ""
        while time.monotonic() < end:
            status = str(_query_stats(source).get("status", ""))
            if status in TERMINAL:
                break
            time.sleep(0.05)
        mig.stats = _query_stats(source)
        notes += _source_recovers(source, failover, negotiated, timeouts, after="migrate_cancel",
                                  migration=status)
    else:
        notes.append(f"source {_side_error(source)}")
    if not destination.process.is_running():
        notes.append(f"destination {_side_error(destination)}")
    mig.record()
    mig.verdict, mig.reason = "fail", "; ".join(notes)
    return mig


# --- the stage ----------------------------------------------------------------------------------

#: s a migration waits for the source another migration of its key is running, to resume it after that one,
#: before it starts a source of its own (waiting costs a job slot, not CPU: a generic guest's boot costs more)
CHAIN_WAIT = 120.0

def source_key(case: Case, source: Target, destination: Target, machine: str, output: Path) -> Key | None:
    """The checked state (conformance/live/checked.py) a migration's source can start from: (output, case,
    source binary, the machine type both sides run), or None when it runs none (a skip, a bisection run)."""
    if case.devices_only is not None:
        return None
    pinned, why = _migration_machine(case, source.caps, destination.caps, machine, source.binary != destination.binary)
    return None if pinned is None or why else (str(output), case.name, str(source.binary), pinned)


def run_migrate(case: Case, source: Target, destination: Target, catalogue: Catalogue, output: Path, *,
                timeouts: MigrationTimeouts | None = None, machine: str = "",
                checked: CheckedStates | None = None) -> StageResult:
    """Migrate one case from ``source`` to ``destination`` (one build or two); always a result.

    ``machine``: the machine type to run both sides under (--machines all/REGEX); by default one build runs
    the case's own machine alias and two builds the newest versioned type both have (conformance/machines.py).
    Every result records the machine type (``details.machine``), how it was chosen (``machine_from``), the
    direction (``same``, ``forward``, ``backward``) and the builds that deprecate it (``machine_deprecated``:
    QEMU warns on stderr, which fails nothing).

    ``checked``: the run's checked states; the source then starts from its build's checked state for this
    machine type when there is one (``details.restored``), else boots as without it."""
    key = source_key(case, source, destination, machine, output) if checked is not None else None
    try:
        return _run_migrate(case, source, destination, catalogue, output, timeouts or MigrationTimeouts.from_env(),
                            machine, checked if key is not None else None, key)
    finally:
        if checked is not None and key is not None:
            checked.used(key)


def _run_migrate(case: Case, source: Target, destination: Target, catalogue: Catalogue, output: Path,
                 timeouts: MigrationTimeouts, machine: str, checked: CheckedStates | None, key: Key | None
                 ) -> StageResult:
    started = time.monotonic()
    caps = source.caps
    details: dict[str, Any] = {"pair": pair_label(source, destination),
                               "direction": direction(source.caps, destination.caps)}
    artifacts: dict[str, str] = {}

    def result(verdict: str, reason: str) -> StageResult:
        return StageResult(case=case.name, stage="migrate", verdict=verdict, reason=reason, arch=caps.arch,
                           qemu=source.build, peer=destination.build, accel=source.accel.accel,
                           duration_s=time.monotonic() - started, artifacts=artifacts, details=details)

    cross = source.binary != destination.binary
    pinned, why = _migration_machine(case, source.caps, destination.caps, machine, cross)
    details.update(machine=pinned or machine or case.machine_for(caps.arch) or "",
                   machine_from=FROM_GIVEN if machine else FROM_NEWEST if cross else FROM_CASE)
    if pinned is not None:
        deprecated = deprecated_in(pinned, [source.caps, destination.caps])
        if deprecated:
            details["machine_deprecated"] = deprecated
    skip = migrate_skip(case, source, destination) or why
    if skip:
        return result("skip", skip)
    src_dir, dst_dir = pair_folders(output, case, source, destination, machine)
    argv_machine = None if details["machine_from"] == FROM_CASE else pinned  # one build: the case's alias
    vms: list[GuestVm] = []
    seen: NotUp | None = None  # a source not booted again: what the boot stage's boot of it saw
    kept: Resumable | None = None  # a source that may serve the next migration of its key
    lent: Resumable | None = None  # a source kept by the key's migration before, resumed for this one
    asked: str | None = None  # the argv digest a kept source was asked for (CheckedStates.lend)
    verdict, reason = "", ""
    try:
        try:
            src_prep = prepare_vm(case, source, catalogue, output, src_dir, machine=argv_machine)
            dst_prep = prepare_vm(case, destination, catalogue, output, dst_dir, machine=argv_machine,
                                  image_dir=src_dir)
        except NeedsHardware as exc:
            return result("skip", exc.message)
        except ConformanceError as exc:
            return result("error", f"cannot prepare the migration: {exc}")
        cpu = _cpu_model(src_prep.argv)
        if cross and cpu in VERSION_BOUND_CPUS and source.caps.version != destination.caps.version:
            return result("skip", f"-cpu {cpu} is each QEMU version's own feature set, not a model two versions "
                                  f"share: not migratable from {source.caps.version} to {destination.caps.version}")
        for target in (source, destination) if cross and cpu else ():
            models = {c.name for c in target.caps.cpu_models}
            if models and cpu not in models:
                return result("skip", f"CPU model {cpu} unknown to QEMU {target.caps.version}")
        details["source"], details["destination"] = src_prep.details, dst_prep.details
        artifacts.update({f"source-{k}": v for k, v in src_prep.artifacts.items()})
        artifacts.update({f"destination-{k}": v for k, v in dst_prep.artifacts.items()})
        state: CheckedState | SourceDown | str | None = None
        mig: Migration | None = None
        digest = argv_digest(src_prep.live.argv, src_dir, _alias_to(source.caps))
        # a source that served a passed migration of the same key, kept paused, is resumed instead of started:
        # every non-failover one (a failover source's primary stays unplugged after a completed migration)
        chain = checked is not None and key is not None and not failover_pairs(devices(src_prep.live.argv))
        # the boot stage's checked VM, handed over paused to the key's one migration: resumed, and a hand-over
        # that fails its proof is an error of the suite (never a boot in its place)
        handed = checked.take(key, digest) if checked is not None and key is not None else None
        if handed is not None:
            chain = False  # the key's one migration: nothing to keep its source for
            lent = handed
        elif chain and checked is not None and key is not None:
            asked, lent = digest, checked.lend(key, digest, wait=CHAIN_WAIT)
        if lent is not None:
            verdict, reason, mig, dst_prep = _resume_then_migrate(
                lent, src_prep, vms, timeouts, details, partial(prepare_vm, case, destination, catalogue, output,
                                                                 dst_dir, machine=argv_machine))
            details["destination"] = dst_prep.details
            if "resumed" not in details and handed is not None:  # the hand-over failed its proof: an error
                verdict, reason = "error", details["resume_failed"]["why"]
            elif "resumed" not in details:  # it could not be resumed: the key's next source starts as without it
                lent = None
        if lent is None and checked is not None and key is not None:
            origin = f"migration {pair_label(source, destination)}"
            # a chained key's sources boot (the first, then any run at the same time) and are kept: no state
            state = checked.get(key, digest, None if chain else partial(
                make_checked, case, source, catalogue, output, argv_machine, key, origin, checked.finding))
        if lent is not None:
            pass
        elif isinstance(state, SourceDown):  # the boot stage's source, same argv, never came up: not booted again
            details["source_from"] = f"this run's boot stage, not booted again: {state.boot}"
            details["source_boot"] = state.record()
            verdict, reason, seen = "fail", state.not_up.why, state.not_up
        elif isinstance(state, CheckedState):
            artifacts["source-checked"] = str(state.folder.relative_to(output))
            try:
                verdict, reason, mig = _restore_then_migrate(state, src_prep, dst_prep, vms, timeouts, details,
                                                             output)
            except _Unloaded as unloaded:  # as ``loads`` judges a state its build does not load, then a boot
                state.state_file.unlink(missing_ok=True)
                for vm in vms:  # a QEMU whose monitor went away mid-load is dying: its own end, not a stop
                    vm.process.wait(2.0)
                    vm.stop()
                if checked is not None:
                    checked.finding(load_failure(state, source, unloaded.failure, vms, output))
                vms.clear()
                del artifacts["source-checked"]
                tail = unloaded.failure.evidence.get("restore_stderr_tail", "").strip().splitlines()[-1:]
                details["source_from"] = (f"a boot of its own: its own build did not load the saved state: "
                                          f"{unloaded.failure.message}" + (f" ({tail[0]})" if tail else ""))
                verdict, reason, mig = _boot_then_migrate(case, src_prep, dst_prep, vms, timeouts)
        else:
            if state is not None:
                details["source_from"] = f"a boot of its own: {state}"
            elif chain and checked is not None and key is not None and checked.uses[key] > 1:
                details["source_from"] = "a boot of its own, kept for the next migrations from it (no checked state " \
                                         "is saved for a source that is not a failover guest)"
            verdict, reason, mig = _boot_then_migrate(case, src_prep, dst_prep, vms, timeouts)
        if chain and asked is not None and verdict == "pass" and mig is not None and len(vms) == 2:
            kept = _keepable(vms[0], vms[1], lent.prepared if lent is not None else src_prep, details,
                             f"{pair_label(source, destination)}" + (f" @{pinned}" if machine else "")
                             + f" ({dst_dir.parent.relative_to(output)})")
        if mig is not None:
            details.update({"timeline": mig.timeline, "events": mig.events, "stats": mig.stats,
                            "checks": mig.checks, **mig.evidence})
    finally:
        for vm, side in zip(vms, ("source", "destination"), strict=False):
            if kept is None or vm is not kept.vm:  # a kept source: stopped once its destination is, or kept
                details.setdefault("exits", {})[side] = vm.stop().describe()
            # QEMU CPU s this migration used (a resumed source: since its previous migration ended, or its hand-over;
            # a QEMU that died reads 0: its share is then 0, not the negative of what it used before)
            details.setdefault("cpu_s", {})[side] = round(max(0.0, vm.cpu_seconds() - (
                lent.cpu_seconds if side == "source" and lent is not None else 0.0)), 2)
            artifacts.update({f"{side}-{k}": v for k, v in vm_artifacts(vm, output).items()})
            if details.get("machine_deprecated"):  # QEMU's warning, as evidence that it only warned
                said = [line for line in vm.process.stderr_tail(50).splitlines() if "deprecated" in line.lower()]
                if said:
                    details.setdefault("machine_deprecated_warnings", {})[side] = said[0].strip()
        if asked is not None and checked is not None and key is not None:  # lend was asked: keep, or let go
            # kept once its destination is stopped: never two running VMs on the disks they share
            if checked.keep(key, asked, kept):
                details["exits"]["source"] = "kept paused (postmigrate) for the next migration from this source"
                details["source_kept"] = True
            elif kept is not None:
                details["exits"]["source"] = kept.vm.stop().describe()
    if verdict == "fail":
        for vm, side in zip(vms, ("source", "destination"), strict=False):
            details[f"{side}_console_tail"] = vm.console_tail(15)
            details[f"{side}_stderr_tail"] = vm.process.stderr_tail(10)
    verdict, reason = explain_pair(verdict, reason, vms, source.caps, destination.caps, details,
                                   accel=source.accel.accel, argvs=(src_prep.live.argv, dst_prep.live.argv),
                                   source_seen=seen)
    return result(verdict, reason)


def _migration_machine(case: Case, source: Capabilities, destination: Capabilities, given: str, cross: bool
                       ) -> tuple[str | None, str]:
    """The machine type a migration runs under, by its name (an alias resolved: ``q35`` -> ``pc-q35-7.2``),
    and '' ; or (None, why it cannot run). ``given`` must be known to both builds."""
    base = case.machine_for(source.arch) or ""
    if given:
        sides = (source,) if destination is source else (source, destination)
        missing = [str(c.version) for c in sides if c.machine(given) is None]
        if missing:
            return None, f"machine type {given} unknown to QEMU {' and '.join(missing)}"
        return given, ""
    if cross:
        return pinned_machine(base, source, destination)
    own = source.machine(base)
    return (own.name if own is not None else None), ""


class PairNotReady(LiveError):
    """The source did not boot and pass its checks, or the destination did not start."""


def start_pair(src_prep: PreparedVm, dst_prep: PreparedVm, vms: list[GuestVm]) -> tuple[GuestVm, GuestVm]:
    """Boot and check the source, then start the destination with ``-incoming defer``; each VM started
    is appended to ``vms`` (the caller stops them). Raises PairNotReady with the reason."""
    name = f"{src_prep.case.name} {pair_label(src_prep.target, dst_prep.target)}"
    try:
        source = launch(src_prep, f"{name} source")
    except LiveError as exc:
        raise PairNotReady(f"source: {launch_failure(exc)}") from None
    vms.append(source)
    waited = source.wait_report("boot", BOOT_TIMEOUT)
    if not waited.ok:
        raise PairNotReady(f"source did not boot: {waited.reason}")
    failures, _, _ = check_guest(source, src_prep, src_prep.details)
    if failures:
        raise PairNotReady(f"source failed its boot checks: {'; '.join(failures)}")
    try:
        destination = launch(dst_prep, f"{name} destination", incoming=True)
    except LiveError as exc:
        raise PairNotReady(f"destination: {launch_failure(exc)}") from None
    vms.append(destination)
    return source, destination


def _alias_to(caps: Capabilities) -> Callable[[str], str | None]:
    def resolve(name: str) -> str | None:
        found = caps.machine(name)
        return found.name if found is not None else None

    return resolve


def checked_folder(output: Path, case: Case, target: Target, machine: str) -> Path:
    """The folder of a checked source made for migrations (not by the boot stage), emptied."""
    tag = hashlib.sha1(str(target.binary).encode()).hexdigest()[:6]
    folder = output / "live" / case.name / f"checked-{target.caps.arch}-{target.caps.version}-{tag}-{machine}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def make_checked(case: Case, target: Target, catalogue: Catalogue, output: Path, machine: str | None, key: Key,
                 origin: str, finding: Callable[[StageResult], None] | None = None) -> CheckedState | str:
    """Boot, check and save a source for the migrations of ``key``; why not (a str) when it cannot be: then
    each of them boots its own source, as without checked states."""
    folder = checked_folder(output, case, target, key[3])
    try:
        prepared = prepare_vm(case, target, catalogue, output, folder, machine=machine)
    except ConformanceError as exc:
        return f"cannot prepare the checked source: {exc}"
    vm: GuestVm | None = None
    try:
        try:
            vm = launch(prepared, f"{case.name} checked source on {target.binary}")
            waited = vm.wait_report("boot", BOOT_TIMEOUT)
            if not waited.ok:
                return f"the checked source did not boot: {waited.reason}"
            failures, _, _ = check_guest(vm, prepared, prepared.details)
            if failures:
                return f"the checked source failed its boot checks: {'; '.join(failures)}"
        except LiveError as exc:
            return f"the checked source: {launch_failure(exc)}"
        try:
            state = save(vm, prepared, key, origin)
        except LiveError as exc:
            return f"the checked source could not be saved: {exc.message}"
        return loads(state, case, target, catalogue, output, machine, vm, saved_live(prepared), finding)
    finally:
        if vm is not None:
            vm.stop()


def loads(state: CheckedState, case: Case, target: Target, catalogue: Catalogue, output: Path,
          machine: str | None, saved: GuestVm, live: bool, finding: Callable[[StageResult], None] | None = None
          ) -> CheckedState | str:
    """The new state, once its own build loaded it (into ``verify/`` beside it, left there when it did not)
    with the RAM of ``saved``, the guest it was saved from (stopped; ``live``: saved running where writes can
    be lost, so the comparison must run); why not otherwise. A state that does not load is a finding, not the
    migrations' error: each of them then boots its own source (measured: isa-cirrus-vga's state aborts 7.2 on
    load, known bug isa-cirrus-vga-load-alias-abort; a pc-nic-rich state saved right after boot crashed 10.0
    once), and ``finding`` gets it as a result of its own (load_failure)."""
    folder = state.folder / "verify"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    vms: list[GuestVm] = []
    try:
        prepared = prepare_vm(case, target, catalogue, output, folder, machine=machine)
        loaded, record = restore(state, prepared, vms, f"{case.name} checked state on {target.binary}", output,
                                 _alias_to(target.caps), load_only=True)
        differs = same_ram(saved, loaded, live)
        if differs:
            state.state_file.unlink(missing_ok=True)
            return differs
        state.saved.update(verify_load_s=record["load_s"], ram="equal" if live else "equal or not compared")
    except RestoreFailed as exc:
        state.state_file.unlink(missing_ok=True)
        for vm in vms:  # a QEMU whose monitor went away mid-load is dying: its own end, not a requested stop
            vm.process.wait(2.0)
            vm.stop()
        if finding is not None:
            finding(load_failure(state, target, exc, vms, output))
        tail = exc.evidence.get("restore_stderr_tail", "").strip().splitlines()[-1:]
        return f"its own build did not load the saved state: {exc.message}" + (f" ({tail[0]})" if tail else "")
    except ConformanceError as exc:
        return f"cannot prepare the check of the saved state: {exc}"
    finally:
        for vm in vms:
            vm.stop()
    shutil.rmtree(folder)
    return state


def load_failure(state: CheckedState, target: Target, exc: RestoreFailed, vms: list[GuestVm], output: Path
                 ) -> StageResult:
    """A checked state its own build did not load, as a result of its own: a ``migrate`` of the build with
    itself through the state file (``details.state_load``: where the state came from, how the loading QEMU
    ended, its stderr and console tails), judged like a destination that cannot load a stream (a fail, unless a
    known bug of the build explains it). Its migrations boot their own source, as before."""
    caps = target.caps
    details: dict[str, Any] = {"pair": pair_label(target, target), "direction": "same", "machine": state.machine,
                               "machine_from": FROM_CASE, "state_load": state.record(output), **exc.evidence}
    loaded = vms[0] if vms else None
    reason = f"its own build does not load the checked state saved by the {state.origin}: {exc.message}"
    if loaded is not None:
        details["exits"] = {"destination": loaded.process.exit.describe()}
        if not loaded.process.exit.requested and loaded.process.exit.returncode is not None:
            reason += f"; destination {_side_error(loaded)}"  # as a migration says it (what known bugs match)
    verdict, reason = explain("fail", reason, [loaded] if loaded else [], caps, "migrate", details,
                              peer=caps.version, side="destination", accel=target.accel.accel,
                              argv=exc.evidence.get("restore_argv"))
    return StageResult(case=state.key[1], stage="migrate", verdict=verdict, reason=reason, arch=caps.arch,
                       qemu=target.build, peer=target.build, accel=target.accel.accel,
                       duration_s=float(state.saved.get("save_s", 0.0)) + float(details["restored"].get("load_s", 0.0)),
                       artifacts={"state_load": str((state.folder / "verify").relative_to(output))
                                  if state.folder.is_relative_to(output) else str(state.folder / "verify")},
                       details=details)


def note_boot(checked: CheckedStates, case: Case, target: Target, output: Path, run: BootRun) -> None:
    """For the boot stage: a source that never came up (``run.not_up``) is recorded for the migrations from its
    build under its machine type, which then rely on it instead of booting it again (SourceDown), when the
    boot's evidence is not the load's: a known bug explains it, or QEMU ended by itself (did not start,
    crashed). An unexplained boot timeout is booted again by each migration, as before."""
    key = source_key(case, target, target, "", output)
    down = run.not_up
    if key is None or down is None or not checked.wanted(key):
        return
    if run.result.verdict != "known-bug" and not down.ended:
        return
    folder = down.folder.relative_to(output) if down.folder.is_relative_to(output) else down.folder
    label = f"boot {case.name} on QEMU {target.caps.version} {target.caps.arch}: {run.result.verdict} ({folder})"
    checked.add(key, argv_digest(run.argv, down.folder, _alias_to(target.caps)),
                SourceDown(down, label, run.result.verdict))


def keep_checked(checked: CheckedStates, case: Case, target: Target, catalogue: Catalogue, output: Path
                 ) -> Callable[[GuestVm, PreparedVm], tuple[str, bool]] | None:
    """For the boot stage: when the run migrates from this build under this machine type (None: it does not),
    hand its checked VM over, paused, to the key's one migration (``CheckedStates.hand``; the VM is then the
    migration's to stop), else save it as the state its build's migrations start from. (What it did, whether
    it took the VM.)"""
    key = source_key(case, target, target, "", output)
    if key is None or not checked.wanted(key):
        return None

    def keep(vm: GuestVm, prepared: PreparedVm) -> tuple[str, bool]:
        digest = argv_digest(prepared.live.argv, prepared.vm_dir, _alias_to(target.caps))
        if checked.uses[key] == 1:
            try:
                handed = hand_over(vm, prepared)
            except LiveError as exc:
                return f"not handed over: {exc.message}", False
            if checked.hand(key, digest, handed):
                return (f"handed over paused (HB {handed.heartbeat}) to the migration from it, which resumes it",
                        True)
            vm.process.qmp.cmd("cont")  # HANDED_MAX wait already: saved as before (save stops it again)
        try:
            saved = save(vm, prepared, key, "boot stage")
        except LiveError as exc:
            state: CheckedState | str = f"the boot stage could not save its guest: {exc.message}"
        else:
            live = saved_live(prepared)
            if checked.uses[key] == 1 and not live:
                # its one migration's restore loads it (a load that fails there is the same finding, and that
                # migration boots its own source): a load of its own here would only load it twice
                saved.verified = False
                saved.saved["load_check"] = "left to the one migration that restores it"
                state = saved
            else:
                state = loads(saved, case, target, catalogue, output, None, vm, live, checked.finding)
        checked.add(key, digest, state)
        return (f"saved for the migrations from it ({prepared.vm_dir.name}/{STATE_FILE})"
                if isinstance(state, CheckedState) else state), False

    return keep


class _Unloaded(Exception):
    """A checked state that was not loaded after its save (``CheckedState.verified`` False) did not load here."""

    def __init__(self, failure: RestoreFailed) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _restore_then_migrate(state: CheckedState, src_prep: PreparedVm, dst_prep: PreparedVm, vms: list[GuestVm],
                          timeouts: MigrationTimeouts, details: dict[str, Any], output: Path
                          ) -> tuple[str, str, Migration | None]:
    """The source restored from its checked state (a failed restore: an error of the suite), then migrated.
    _Unloaded when a state not loaded after its save does not load: what ``loads`` would have found."""
    name = f"{src_prep.case.name} {pair_label(src_prep.target, dst_prep.target)}"
    try:
        source, details["restored"] = restore(state, src_prep, vms, f"{name} source (restored)", output,
                                              _alias_to(src_prep.target.caps))
    except RestoreFailed as exc:
        if not state.verified and exc.evidence.get("restore_phase") == "load":
            raise _Unloaded(exc) from None
        details.update(exc.evidence)
        return "error", exc.message, None
    return _migrate_to(source, src_prep, dst_prep, vms, timeouts)


def _resume_then_migrate(lent: Resumable, src_prep: PreparedVm, vms: list[GuestVm], timeouts: MigrationTimeouts,
                         details: dict[str, Any], prepare_destination: Callable[..., PreparedVm]
                         ) -> tuple[str, str, Migration | None, PreparedVm]:
    """A source kept after an earlier passed migration of the same key, resumed (``details.resumed``), then
    migrated into a destination that shares that source's disks (prepared again by ``prepare_destination``).
    One that cannot be resumed is stopped, with ``details.resume_failed``, and no verdict (the caller starts the
    source as without it)."""
    vms.append(lent.vm)  # from here on the caller stops it, whatever happens
    dst_prep = prepare_destination(image_dir=lent.prepared.vm_dir)
    try:
        source, details["resumed"] = resume(lent, src_prep, _alias_to(src_prep.target.caps))
    except RestoreFailed as exc:
        details["resume_failed"] = {"why": exc.message, **exc.evidence}
        vms.remove(lent.vm)
        lent.vm.stop()
        return "", "", None, prepare_destination(image_dir=src_prep.vm_dir)
    details["source_from"] = (f"resumed: the source of {'; '.join(lent.served)}, cont after its last migration"
                              if lent.served else f"the boot stage's checked VM ({lent.prepared.vm_dir.name}), "
                                                  "handed over paused, resumed with cont")
    if lent.restored:
        details["restored"] = lent.restored
    verdict, reason, mig = _migrate_to(source, src_prep, dst_prep, vms, timeouts)
    return verdict, reason, mig, dst_prep


def _migrate_to(source: GuestVm, src_prep: PreparedVm, dst_prep: PreparedVm, vms: list[GuestVm],
                timeouts: MigrationTimeouts) -> tuple[str, str, Migration | None]:
    """Start the destination (appended to ``vms``) and migrate a running, checked source into it."""
    name = f"{src_prep.case.name} {pair_label(src_prep.target, dst_prep.target)}"
    try:
        destination = launch(dst_prep, f"{name} destination", incoming=True)
    except LiveError as exc:
        return "fail", f"destination: {launch_failure(exc)}", None
    vms.append(destination)
    guest = dst_prep.target.guest
    mig = migrate_vms(source, destination, failover=failover_pairs(devices(src_prep.live.argv)), timeouts=timeouts,
                      has_driver=guest.has_driver if guest else lambda _module: False, bandwidth=stage_bandwidth())
    return mig.verdict, mig.reason, mig


def _keepable(source: GuestVm, destination: GuestVm, prepared: PreparedVm, details: dict[str, Any], served: str
              ) -> Resumable | None:
    """A restored source that may serve the next migration of its checked state, after one that passed: it is
    ``postmigrate`` and the destination's guest wrote nothing to the disks both share (query-blockstats: no
    write operation), so what the source resumes on is what its guest left. None otherwise (it is stopped)."""
    try:
        stats = destination.process.qmp.cmd("query-blockstats", timeout=5)
    except QmpError:
        return None
    writes = sum(int(d.get("stats", {}).get("wr_operations", 0)) + int(d.get("stats", {}).get("wr_bytes", 0))
                 for d in stats)
    if writes or _status(source) != "postmigrate":
        return None
    source.reader.poll_file(source.console)  # its console up to the stop: the last heartbeat before it
    before = details.get("resumed", {}).get("after", [])
    return Resumable(source, prepared, details.get("restored", {}), [*before, served], source.report.last_heartbeat,
                     source.cpu_seconds())


def _boot_then_migrate(case: Case, src_prep: PreparedVm, dst_prep: PreparedVm, vms: list[GuestVm],
                       timeouts: MigrationTimeouts) -> tuple[str, str, Migration | None]:
    try:
        source, destination = start_pair(src_prep, dst_prep, vms)
    except PairNotReady as exc:
        legacy = _legacy_failover_standby(vms[0], src_prep) if vms else None
        return ("skip", legacy, None) if legacy else ("fail", exc.message, None)
    guest = dst_prep.target.guest
    mig = migrate_vms(source, destination, failover=failover_pairs(devices(src_prep.live.argv)), timeouts=timeouts,
                      has_driver=guest.has_driver if guest else lambda _module: False, bandwidth=stage_bandwidth())
    return mig.verdict, mig.reason, mig


def _legacy_failover_standby(source: GuestVm, prepared: PreparedVm) -> str | None:
    """Why failover cannot be negotiated on this machine type, when that is why the source failed its checks:
    a standby that is a legacy virtio device. Machine types up to X-2.6 turn virtio-pci's modern interface off
    (QEMU's hw_compat_2_6: disable-modern=on, disable-legacy=off), and the legacy interface carries 32 feature
    bits, so VIRTIO_NET_F_STANDBY (bit 62) is never offered: the guest drives a plain virtio-net, QEMU never
    sends FAILOVER_NEGOTIATED and keeps the primary hidden. Read from the running source (qom-get of the
    standby's effective disable-modern), not from the machine type's name."""
    if not source.process.is_running():
        return None
    legacy = []
    for standby, _primary in failover_pairs(devices(prepared.live.argv)):
        with contextlib.suppress(QmpError):
            if source.process.qmp.cmd("qom-get", path=f"/machine/peripheral/{standby.get('id')}",
                                      property="disable-modern", timeout=5) is True:
                legacy.append(str(standby.get("id")))
    if not legacy:
        return None
    machine = MachineFacts.from_argv(prepared.live.argv).machine or "this machine type"
    return (f"virtio-net failover cannot be negotiated under {machine}: the standby {', '.join(legacy)} is a legacy "
            "virtio device there (disable-modern=on, QEMU's compat for machine types before 2.7), whose 32 feature "
            "bits cannot offer VIRTIO_NET_F_STANDBY (bit 62); the guest never negotiates failover, so the primary "
            "stays hidden: not a migration problem")


def explain_pair(verdict: str, reason: str, vms: list[GuestVm], source: Capabilities, destination: Capabilities,
                 details: dict[str, Any], *, accel: str = "",
                 argvs: tuple[list[str], list[str]] | None = None, source_seen: NotUp | None = None
                 ) -> tuple[str, str]:
    """Known bugs of either side's version (the source's first) that explain a failed migration, or
    that should have shown in a passed one (not-reproduced); ``accel``: the pair's accelerator; ``argvs``:
    the (source, destination) argv each side was given (what a side that did not start is judged on);
    ``source_seen``: what the boot stage's source saw, for a source not booted again (SourceDown)."""
    sides = ("source", "destination")
    started: list[GuestVm | None] = [*vms, None, None][:2]  # a side that did not start has no VM
    given = argvs or (None, None)
    for vm, caps, peer, side, argv in zip(started, (source, destination), (destination, source), sides, given,
                                          strict=True):
        verdict, reason = explain(verdict, reason, [vm] if vm else [], caps, "migrate", details, peer=peer.version,
                                  side=side, accel=accel, argv=argv, seen=source_seen if side == "source" else None)
        if verdict not in ("fail", "pass"):
            break
    return verdict, reason
