"""Fixtures of the live tests: the host's x86_64 QEMU, probed, with its accelerator and test guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.errors import GuestBuildError
from conformance.live.boot import Target
from conformance.runner import make_target


@pytest.fixture(scope="module")
def x86_target(qemu_x86_64: Path) -> Target:
    try:
        return make_target(qemu_x86_64, lambda _text: None)
    except GuestBuildError as exc:
        pytest.skip(f"no test guest: {exc}")
