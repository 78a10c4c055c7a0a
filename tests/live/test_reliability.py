"""When things go wrong live: every failure is a result with its evidence, and no QEMU survives.

- a guest that never reports -> "boot timeout" with its serial log;
- QEMU killed by SIGSEGV mid-boot -> the signal is the result;
- a corrupt or missing kernel -> a clear error, not a traceback;
- SIGKILL of the pytest run (with xdist workers) or of the CLI mid-boot -> no QEMU of that run remains.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from conformance.cases import load_catalogue
from conformance.errors import GuestBuildError
from conformance.live.boot import Target, run_boot
from conformance.live.guest import build_guest
from tests.helpers import ROOT
from tests.helpers.processes import (
    assert_no_qemu_left,
    processes_matching,
    qemus,
    qemus_matching,
    start,
    wait_for_qemu,
)

pytestmark = pytest.mark.live


def _with_guest(target: Target, **changes: object) -> Target:
    assert target.guest is not None, target.guest_problem
    return dataclasses.replace(target, guest=dataclasses.replace(target.guest, **changes))


def test_guest_that_never_reports_is_a_boot_timeout(x86_target: Target, tmp_path: Path) -> None:
    catalogue = load_catalogue()
    silent = _with_guest(x86_target, append=x86_target.guest.append.replace("console=ttyS0", "console=ttyS3"))
    started = time.monotonic()
    result = run_boot(catalogue.get("q35-minimal"), silent, catalogue, tmp_path, timeout=4).result
    assert result.verdict == "fail"
    assert result.reason.startswith("boot timeout"), result.reason
    assert time.monotonic() - started < 30
    assert (tmp_path / result.artifacts["console"]).exists(), "the serial log is kept"
    assert "stderr" in result.artifacts and "qmp" in result.artifacts
    assert processes_matching(str(tmp_path)) == []


@pytest.mark.smoke
def test_qemu_killed_by_sigsegv_mid_boot(x86_target: Target, tmp_path: Path) -> None:
    catalogue = load_catalogue()

    def crash_it() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = list(tmp_path.glob("live/*/*/qemu.pid"))
            if pids:
                time.sleep(0.3)  # mid-boot: the guest has not reported yet
                os.kill(int(pids[0].read_text()), signal.SIGSEGV)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=crash_it)
    killer.start()
    result = run_boot(catalogue.get("net-user-virtio"), x86_target, catalogue, tmp_path).result
    killer.join()
    assert result.verdict in ("fail", "known-bug")
    assert "SIGSEGV" in result.reason, result.reason
    assert result.details.get("signal") == "SIGSEGV"
    assert "console" in result.artifacts or "stderr" in result.artifacts


def test_missing_kernel_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GuestBuildError) as info:
        build_guest("x86_64", kernel=tmp_path / "vmlinuz-none", cache=tmp_path)
    assert "vmlinuz-none" in str(info.value)


@pytest.mark.smoke
def test_corrupt_kernel_is_a_result_not_a_traceback(x86_target: Target, tmp_path: Path) -> None:
    corrupt = tmp_path / "vmlinuz-corrupt"
    corrupt.write_bytes(os.urandom(4096))
    catalogue = load_catalogue()
    result = run_boot(catalogue.get("q35-minimal"), _with_guest(x86_target, kernel=corrupt), catalogue,
                      tmp_path / "out", timeout=10).result
    assert result.verdict == "fail"
    assert "QEMU" in result.reason and ("exit code" in result.reason or "did not start" in result.reason), \
        result.reason
    assert processes_matching(str(tmp_path)) == []


def _kill_mid_boot(command: list[str], mark: str, log: Path) -> None:
    """Start a runner, SIGKILL it once a QEMU of its run exists, then require that QEMU to die too."""
    proc = start(command, log, mark, cwd=ROOT)
    try:
        wait_for_qemu(proc, mark, log, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert_no_qemu_left(mark, within=10)
        time.sleep(2)  # and none starts late: a worker caught forking once left a QEMU adopted by init
        assert qemus(mark) == [], "a QEMU started after its runner was killed, and survived it"
    finally:
        proc.kill()


@pytest.mark.smoke
@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigkill_of_pytest_leaves_no_qemu(qemu_x86_64: Path, tmp_path: Path, workers: str) -> None:
    out = tmp_path / "pytest-out"
    _kill_mid_boot([sys.executable, "-m", "pytest", "-q", "-n", workers, "-p", "no:cacheprovider",
                    f"--conformance-output={out}", "--conformance-cases=teaming-q35",
                    "--conformance-cases=net-user-virtio", f"--conformance-qemu={qemu_x86_64}",
                    str(ROOT / "tests/live/test_boot_cases.py")], str(tmp_path), tmp_path / "pytest.log")


def test_sigkill_of_the_cli_leaves_no_qemu(qemu_x86_64: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-out"
    _kill_mid_boot([sys.executable, "-m", "conformance.cli", "run", "--stages", "boot", "--qemu", str(qemu_x86_64),
                    "--cases", "teaming-q35", "--cases", "net-*", "-o", str(out)], str(tmp_path),
                   tmp_path / "cli.log")


def test_kvm_boot_probe_is_bounded_and_cleans_up(x86_target: Target, qemu_x86_64: Path) -> None:
    from conformance.live.accel import PVM_MODULE, kvm_boot_probe
    from conformance.qemu.host import kvm_openable

    if not kvm_openable():
        pytest.skip("no KVM: /dev/kvm cannot be opened here")
    assert x86_target.guest is not None
    started = time.monotonic()
    booted, detail = kvm_boot_probe(qemu_x86_64, x86_target.guest, timeout=3 if PVM_MODULE.exists() else 30)
    assert time.monotonic() - started < 40
    if PVM_MODULE.exists():  # the nested PVM hypervisor: QEMU aborts (-cpu host) or the guest never reports
        assert not booted
        assert "no guest report under KVM" in detail or "QEMU killed by" in detail, detail
    else:
        assert booted, detail
    assert qemus_matching("kvm-probe") == [] and qemus_matching("-accel kvm") == []
