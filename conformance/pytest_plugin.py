"""pytest plugin (registered through the pytest11 entry point).

- Every pytest process, xdist workers included, dies with its parent
  (PR_SET_PDEATHSIG), and every QEMU dies with the process that started it:
  killing the pytest run leaves no QEMU behind.
- Markers: ``live`` (starts real QEMU guests), ``slow``.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: boots real QEMU guests (seconds each)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from conformance.live.process import die_with_parent_self

        die_with_parent_self()
