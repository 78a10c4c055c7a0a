"""Migrations that go wrong, on the host's real QEMU: each ends as a result in bounded time, the source
and its guest survive where they should, and no QEMU is left behind.

Each scenario boots a checked source and a waiting destination (``start_pair``), then drives
``migrate_vms``, cancelling, pausing or killing from its status callback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conformance.argv.options import devices
from conformance.cases import load_catalogue
from conformance.live.boot import BOOT_TIMEOUT, Target, launch, prepare_vm
from conformance.live.checks import failover_pairs
from conformance.live.migrate import Migration, MigrationTimeouts, migrate_vms, start_pair
from conformance.live.vm import GuestVm
from tests.helpers.processes import processes_matching

pytestmark = pytest.mark.live
QUICK = MigrationTimeouts(migration=20.0, wait_unplug=6.0, replug=10.0, heartbeat=8.0)


@contextlib.contextmanager
def pair(target: Target, tmp_path: Path, case: str, destination_case: str | None = None, *,
         append: str = "") -> Iterator[tuple[GuestVm, GuestVm, list]]:
    """A booted source of ``case`` and a destination (of ``destination_case``) waiting for it. The
    source passed its boot checks, unless ``append`` (extra kernel options) changes the guest: then
    it has only booted."""
    catalogue = load_catalogue()
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = prepare_vm(catalogue.get(case), target, catalogue, tmp_path, tmp_path / "src")
    dst = prepare_vm(catalogue.get(destination_case or case), target, catalogue, tmp_path, tmp_path / "dst",
                     image_dir=tmp_path / "src")
    vms: list[GuestVm] = []
    try:
        if append:
            for prepared in (src, dst):
                at = prepared.live.argv.index("-append") + 1
                prepared.live.argv[at] += f" {append}"
            source = launch(src, f"{case} source")
            vms.append(source)
            assert source.wait_report("boot", BOOT_TIMEOUT).ok, source.console_tail()
            destination = launch(dst, f"{case} destination", incoming=True)
            vms.append(destination)
        else:
            source, destination = start_pair(src, dst, vms)
        yield source, destination, failover_pairs(devices(src.live.argv))
    finally:
        for vm in vms:
            vm.stop()
    assert not processes_matching(str(tmp_path)), "a QEMU of this scenario is still running"


def _when(side: str, status: str, action: Callable[[], None]) -> Callable[[str, str], None]:
    done = []

    def on_status(s: str, st: str) -> None:
        if s == side and st == status and not done:
            done.append(True)
            action()
    return on_status


def test_destination_refuses_the_stream(x86_target: Target, tmp_path: Path) -> None:
    """A destination with another device set cannot load the stream: the source fails and keeps running."""
    with pair(x86_target, tmp_path, "q35-minimal", "net-user-virtio") as (source, destination, failover):
        mig = migrate_vms(source, destination, failover=failover, timeouts=QUICK)
        assert mig.verdict == "fail", mig.reason
        assert "destination" in mig.reason and "exit code" in mig.reason, mig.reason
        assert "source running, guest alive" in mig.reason, mig.reason
        assert source.process.is_running() and not destination.process.is_running()


@pytest.mark.smoke
def test_cancel_in_wait_unplug_brings_the_primary_back(x86_target: Target, tmp_path: Path) -> None:
    with pair(x86_target, tmp_path, "teaming-q35") as (source, destination, failover):
        assert failover, "teaming-q35 has a failover pair"
        mig = migrate_vms(source, destination, failover=failover, timeouts=QUICK,
                          on_status=_when("source", "wait-unplug",
                                          lambda: source.process.qmp.cmd("migrate_cancel")))
        assert "wait-unplug" in mig.statuses("source"), mig.timeline
        assert mig.statuses("source")[-1] == "cancelled", mig.timeline
        assert mig.verdict == "fail"
        assert "source running, guest alive" in mig.reason and "came back" in mig.reason, mig.reason
        assert any(e["event"] == "UNPLUG_PRIMARY" for e in mig.events["source"])


def test_paused_failover_guest_is_a_bounded_result(x86_target: Target, tmp_path: Path) -> None:
    """A paused guest cannot eject its primary, and QEMU waits in wait-unplug (5.2, 7.2 and 10.0
    measured; known bug failover-paused-guest: the 2021 fail-fast patch was not merged). The deadline
    must turn the wait into a result that says the guest was paused, and the cancel must leave the
    source alive."""
    with pair(x86_target, tmp_path, "teaming-q35") as (source, destination, failover):
        source.process.qmp.cmd("stop")
        started = time.monotonic()
        mig = migrate_vms(source, destination, failover=failover, timeouts=QUICK)
        took = time.monotonic() - started
        assert took < QUICK.wait_unplug + 15, f"not bounded: {took:.1f} s"
        assert mig.verdict == "fail", mig.reason
        assert "wait-unplug" in mig.statuses("source"), mig.timeline
        assert "paused" in mig.reason, mig.reason
        assert source.process.is_running(), "the source must survive the cancel"


@pytest.mark.smoke
def test_destination_killed_mid_migration(x86_target: Target, tmp_path: Path) -> None:
    with pair(x86_target, tmp_path, "q35-minimal") as (source, destination, failover):
        assert destination.process.pid is not None
        kill = _when("source", "active", lambda: os.kill(destination.process.pid or 0, signal.SIGKILL))
        started = time.monotonic()
        mig = migrate_vms(source, destination, failover=failover, timeouts=QUICK, on_status=kill)
        assert time.monotonic() - started < QUICK.migration + QUICK.heartbeat + 10
        assert mig.verdict == "fail", mig.reason
        assert "killed by SIGKILL" in mig.reason, mig.reason
        assert "source running, guest alive" in mig.reason, mig.reason


def test_source_killed_mid_migration(x86_target: Target, tmp_path: Path) -> None:
    with pair(x86_target, tmp_path, "q35-minimal") as (source, destination, failover):
        kill = _when("source", "active", lambda: os.kill(source.process.pid or 0, signal.SIGKILL))
        mig: Migration = migrate_vms(source, destination, failover=failover, timeouts=QUICK, on_status=kill)
        assert mig.verdict == "fail", mig.reason
        assert "source QEMU died" in mig.reason and "SIGKILL" in mig.reason, mig.reason


def test_failover_the_guest_never_negotiated_migrates_without_unplug(x86_target: Target, tmp_path: Path) -> None:
    """A standby whose feature the guest never acked (virtio_net kept from loading): QEMU keeps the
    primary hidden, so the migration has nothing to unplug, and the result says so."""
    with pair(x86_target, tmp_path, "teaming-q35", append="module_blacklist=virtio_net") as (
            source, destination, failover):
        assert failover, "teaming-q35 has a failover pair"
        assert not any(e.get("event") == "FAILOVER_NEGOTIATED" for e in source.process.qmp.events)
        mig = migrate_vms(source, destination, failover=failover, timeouts=QUICK)
        assert not any(e["event"] == "UNPLUG_PRIMARY" for e in mig.events["source"]), mig.events
        assert "wait-unplug" not in mig.statuses("source"), mig.timeline
        assert mig.statuses("source")[-1] == "completed", mig.timeline
        assert "failover not negotiated by the guest: migrated without UNPLUG_PRIMARY" in mig.checks, mig.checks
        assert mig.verdict == "pass", mig.reason


def test_cpu_max_between_versions_is_a_skip_that_says_why(x86_target: Target, tmp_path: Path) -> None:
    """-cpu max is each version's own feature set: 7.2 -> 5.2 with it panicked the guest (measured), so
    a cross-version pair is not attempted."""
    from conformance.builds import find_qemu
    from conformance.live.migrate import run_migrate
    from conformance.runner import make_target

    older = find_qemu("5.2")
    if older is None:
        pytest.skip("the QEMU 5.2 build is not prepared (qemu-conformance builds fetch 5.2)")
    catalogue = load_catalogue()
    result = run_migrate(catalogue.get("cpu-maximum"), x86_target, make_target(older, lambda _t: None),
                         catalogue, tmp_path)
    assert result.verdict == "skip", result.reason
    assert "-cpu max" in result.reason and "not migratable from 7.2" in result.reason
    assert not processes_matching(str(tmp_path))
