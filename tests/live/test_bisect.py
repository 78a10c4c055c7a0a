"""Bisection on real QEMU: a device-rich case whose migration fails because of one device names that device.

The case (tests/data/bisect/cases.toml) holds a NIC, a USB controller and mouse, an RNG and a
virtio-rng-pci with both its interfaces off, which QEMU refuses to start. The runner's migrate stage
(the same function `run` and `qualify` use) must fail it and bisect it to that device alone, in bounded runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cases import load_catalogue
from conformance.errors import GuestBuildError
from conformance.live.bisect import MAX_RUNS
from conformance.live.boot import Target
from conformance.runner import live_stage_runner, make_target
from tests.helpers import DATA

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def arm_target(qemu_aarch64: Path) -> Target:
    try:
        return make_target(qemu_aarch64, lambda _text: None)
    except GuestBuildError as exc:
        pytest.skip(f"no aarch64 test guest: {exc}")


@pytest.mark.smoke
def test_a_refused_device_is_bisected_to_itself(arm_target: Target, tmp_path: Path) -> None:
    catalogue = load_catalogue(DATA / "bisect" / "cases.toml")
    case = catalogue.get("virt-bisect-refused")
    result = live_stage_runner("migrate", catalogue, tmp_path)(case, arm_target, arm_target, "")
    assert result.verdict == "fail", result.reason
    record = result.details["bisect"]
    assert record["culprits"] == ["virtio-rng-pci"], record
    assert record["culprit_ids"] == ["bisect-rng"]
    assert record["complete"] and 1 < record["runs"] <= MAX_RUNS
    assert "bisect: fails with virtio-rng-pci bisect-rng alone" in result.reason
    # every run that kept the ivshmem failed, every run without it did not
    for tried in record["tried"]:
        assert (tried["verdict"] == "fail") == ("bisect-rng" in tried["devices"]), tried
