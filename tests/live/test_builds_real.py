"""The real prepared builds (conformance/builds.py): their version, their own modules, the wrapper's
private mount namespace and parent-death signal, QMP over an inherited socket. Each skips, naming the
command, when its build is not prepared (``qemu-conformance builds fetch``). The pure parts of builds.py
are tested in tests/unit/test_builds.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conformance import builds
from conformance.builds import KNOWN_BUILDS

pytestmark = pytest.mark.live

HOST_MODULES = "/usr/lib/x86_64-linux-gnu/qemu"

REAL = [(name, arch) for name, spec in KNOWN_BUILDS.items() for arch in spec.arches]
MACHINE = {"x86_64": "q35", "aarch64": "virt"}


def _real_wrapper(name: str, arch: str) -> Path:
    wrapper = builds.find_qemu(name, arch)
    if wrapper is None:
        pytest.skip(f"QEMU {name} build not prepared: run `qemu-conformance builds fetch {name}`")
    return wrapper


def _wait_for_exe(pid: int, binary: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    exe = ""
    while time.monotonic() < deadline:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return exe
        if exe == str(binary):
            return exe
        time.sleep(0.02)
    return exe


def _kill_marked(marker: str) -> None:
    """SIGKILL every process whose command line holds ``marker`` (cleanup when a test failed)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in {"Z", "X"}


@pytest.mark.smoke
@pytest.mark.parametrize(("name", "arch"), REAL)
def test_real_version(name: str, arch: str) -> None:
    wrapper = _real_wrapper(name, arch)
    first = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, timeout=30,
                           check=True).stdout.splitlines()[0]
    assert re.match(rf"QEMU emulator version {re.escape(KNOWN_BUILDS[name].version_prefix)}\d+ \(Debian ", first)
    info = json.loads((wrapper.parent.parent / builds.BUILD_JSON_NAME).read_text())
    assert info["version_line"] == first
    assert arch in info["arches"]
    versions = {p["name"]: p["version"] for p in info["packages"]}
    assert versions["qemu-system-x86"] == info["package_version"]
    assert f"(Debian {info['package_version']})" in first


@pytest.mark.parametrize(("name", "arch"), REAL)
def test_real_qom_list_types_loads_only_the_builds_own_modules(name: str, arch: str) -> None:
    wrapper = _real_wrapper(name, arch)
    commands = '{"execute":"qmp_capabilities"}\n{"execute":"qom-list-types"}\n{"execute":"quit"}\n'
    proc = subprocess.run([str(wrapper), "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"],
                          input=commands, capture_output=True, text=True, timeout=60, check=False)
    assert not builds.MODULE_TROUBLE.search(proc.stderr), proc.stderr
    assert "Assertion" not in proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert replies[0]["QMP"]["version"]["qemu"]["major"] == int(name.split(".")[0])
    types = next(r["return"] for r in replies if isinstance(r.get("return"), list))
    names = {t["name"] for t in types}
    assert len(types) > 300
    assert "virtio-net-pci" in names
    assert proc.returncode == 0


@pytest.mark.parametrize(("name", "arch"), REAL)
def test_real_wrapper_pid_is_qemus_in_a_private_mount_namespace(name: str, arch: str) -> None:
    wrapper = _real_wrapper(name, arch)
    binary = Path(json.loads((wrapper.parent.parent / builds.BUILD_JSON_NAME).read_text())["root"]) / \
        KNOWN_BUILDS[name].binary(arch)
    marker = f"qc-test-{uuid.uuid4().hex}"
    proc = subprocess.Popen([str(wrapper), "-machine", MACHINE[arch], "-display", "none", "-nodefaults", "-S",
                             "-name", marker],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for_exe(proc.pid, binary) == str(binary)
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if os.path.isdir(HOST_MODULES):
            assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            theirs = Path(f"/proc/{proc.pid}/mountinfo").read_text()
            assert f" {HOST_MODULES} " in theirs
            assert f" {HOST_MODULES} " not in Path("/proc/self/mountinfo").read_text()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
        _kill_marked(marker)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.smoke
@pytest.mark.parametrize(("name", "arch"), REAL)
def test_real_parent_death_signal_survives_the_wrapper(name: str, arch: str) -> None:
    wrapper = _real_wrapper(name, arch)
    marker = f"qc-test-{uuid.uuid4().hex}"
    parent_code = textwrap.dedent(f"""\
        import ctypes, signal, subprocess, sys, time
        libc = ctypes.CDLL(None, use_errno=True)
        def die_with_parent():
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        child = subprocess.Popen([{str(wrapper)!r}, "-machine", {MACHINE[arch]!r}, "-display", "none",
                                  "-nodefaults", "-S", "-name", {marker!r}], preexec_fn=die_with_parent,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(child.pid, flush=True)
        time.sleep(120)
        """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        qemu_pid = int(parent.stdout.readline())
        binary = Path(json.loads((wrapper.parent.parent / builds.BUILD_JSON_NAME).read_text())["root"]) / \
            KNOWN_BUILDS[name].binary(arch)
        assert _wait_for_exe(qemu_pid, binary) == str(binary)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not _gone(qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(qemu_pid), "QEMU outlived its parent: PR_SET_PDEATHSIG was lost in the wrapper"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if parent.stdout:
            parent.stdout.close()
        _kill_marked(marker)


@pytest.mark.parametrize("name", list(KNOWN_BUILDS))
def test_real_qmp_over_an_inherited_socket(name: str) -> None:
    wrapper = _real_wrapper(name, "x86_64")
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([str(wrapper), "-machine", "none", "-nodefaults", "-display", "none",
                             "-chardev", f"socket,id=qmp,fd={theirs.fileno()}", "-mon", "chardev=qmp,mode=control"],
                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    theirs.close()
    try:
        ours.settimeout(10)
        greeting = json.loads(ours.makefile("r").readline())
        assert greeting["QMP"]["version"]["qemu"]["major"] == int(name.split(".")[0])
    finally:
        ours.close()
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize("name", list(KNOWN_BUILDS))
def test_real_prepare_build_again_is_instant(name: str) -> None:
    _real_wrapper(name, "x86_64")
    if not builds.is_prepared(name):
        pytest.skip(f"QEMU {name} was prepared by an older recipe: run `qemu-conformance builds fetch {name}`")
    started = time.monotonic()
    assert builds.prepare_build(name, log=lambda line: None) == builds.build_folder(name).resolve()
    assert time.monotonic() - started < 0.5
