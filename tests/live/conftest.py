"""Fixtures of the live tests: the host's x86_64 QEMU and the prepared 10.0, probed, with their accelerator
and test guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.builds import find_qemu
from conformance.errors import GuestBuildError
from conformance.live.boot import Target
from conformance.runner import make_target


@pytest.fixture(scope="module")
def x86_target(qemu_x86_64: Path) -> Target:
    try:
        return make_target(qemu_x86_64, lambda _text: None)
    except GuestBuildError as exc:
        pytest.skip(f"no test guest: {exc}")


@pytest.fixture(scope="module")
def x86_10_target() -> Target:
    binary = find_qemu("10.0")
    if binary is None:
        pytest.skip("QEMU 10.0 is not fetched (qemu-conformance builds fetch 10.0)")
    try:
        return make_target(binary, lambda _text: None)
    except GuestBuildError as exc:
        pytest.skip(f"no test guest: {exc}")
