"""The accelerator decision (unit level: no QEMU is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.live import accel
from conformance.live.accel import decide_accel


@pytest.fixture
def kvm_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A host that looks like real hardware: /dev/kvm usable, no PVM module."""
    monkeypatch.delenv("QEMU_CONFORMANCE_ACCEL", raising=False)
    monkeypatch.setattr(accel, "kvm_openable", lambda: True)
    monkeypatch.setattr(accel, "PVM_MODULE", tmp_path / "no-such-module")
    return tmp_path


def test_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMU_CONFORMANCE_ACCEL", "kvm")
    assert decide_accel().accel == "kvm"
    monkeypatch.setenv("QEMU_CONFORMANCE_ACCEL", "tcg")
    assert "forced" in decide_accel().reason


def test_this_host_is_never_trusted_blindly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QEMU_CONFORMANCE_ACCEL", raising=False)
    decision = decide_accel(lambda: (True, "should not be asked"), use_cache=False)
    if accel.PVM_MODULE.exists() or not accel.kvm_openable():
        assert decision.accel == "tcg"
    else:
        assert decision.accel == "kvm"


def test_pvm_means_tcg(kvm_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pvm = kvm_host / "kvm_pvm"
    pvm.mkdir()
    monkeypatch.setattr(accel, "PVM_MODULE", pvm)
    decision = decide_accel(lambda: (True, "booted"), cache=kvm_host)
    assert decision.accel == "tcg" and "PVM" in decision.reason


def test_boot_probe_decides_and_is_cached(kvm_host: Path) -> None:
    calls = []

    def failing_probe() -> tuple[bool, str]:
        calls.append(1)
        return False, "no guest report in 25 s"

    first = decide_accel(failing_probe, cache=kvm_host)
    assert first.accel == "tcg" and "no guest report" in first.reason
    second = decide_accel(failing_probe, cache=kvm_host)
    assert second.accel == "tcg" and "cached" in second.reason
    assert len(calls) == 1
    assert decide_accel(lambda: (True, "BOOT-OK in 2.1 s"), cache=kvm_host, use_cache=False).accel == "kvm"
