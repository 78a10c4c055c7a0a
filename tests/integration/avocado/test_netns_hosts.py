"""The test hosts of the remote-spawner test clean up after themselves, and after a run that was killed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.netns_hosts import make_hosts, remove_stale, why_not


@pytest.fixture(autouse=True)
def _can_make_hosts() -> None:
    problem = why_not()
    if problem:
        pytest.skip(f"cannot make test hosts: {problem}")


def namespaces() -> list[str]:
    return [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                        text=True).stdout.splitlines() if line.strip()]


def test_hosts_are_gone_after_an_error_in_the_block(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the test failed"), make_hosts(1, tmp_path) as hosts:
        (host,) = hosts
        assert host.name in namespaces() and host.sshd.poll() is None
        raise RuntimeError("the test failed")
    assert host.name not in namespaces()
    assert host.sshd.poll() is not None


def test_namespaces_of_a_killed_run_are_removed() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale, alive = f"qc-host1-{gone.pid}", f"qc-host9-{os.getpid()}"
    for name in (stale, alive):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        remove_stale()
        assert stale not in namespaces() and alive in namespaces()
    finally:
        for name in (stale, alive):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
