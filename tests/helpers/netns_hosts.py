"""Test "hosts" on this machine: network namespaces, each with a veth address and its own sshd.

``make_hosts(n, folder)`` is a context manager: it makes a key pair (the test's own), n namespaces
``qc-hostI-PID`` with a veth pair each (host side 10.X.I.1/24, namespace side 10.X.I.2/24, a
default route back to the host side), starts ``sshd -D`` inside each (Debian's openssh-server, a host
key and an authorized_keys of the test's own, nothing of /etc/ssh used), and writes one aexpect
slot file per host for avocado's remote spawner. Leaving the block stops the daemons and deletes the
namespaces and veths, whatever happened. The namespaces share this machine's file system and
processes, so a host has the same Python, package and QEMU: only the network is its own. The sshd daemons
die with the test process (PR_SET_PDEATHSIG), and namespaces a killed run left behind are removed by the next.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
def free_subnet() -> str:
    """``10.X``, with X from the pid and not yet used on this machine (two runs at once stay apart): host I
    gets 10.X.I.0/24. Only these addresses, made here, are ever contacted."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    start = os.getpid() % 200
    for step in range(200):
        candidate = f"10.{50 + (start + step) % 200}"
        if f" {candidate}." not in used:
            return candidate
    raise RuntimeError("no free 10.X.0.0/16 for test hosts")


@dataclass
class Host:
    name: str  # the namespace
    address: str  # sshd listens here (namespace side)
    gateway: str  # this machine, as the host sees it (host side of the veth)
    slot: Path  # aexpect remote_login arguments, for spawner.remote.slots
    sshd: subprocess.Popen[bytes]


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now (for avocado's status server)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def why_not() -> str | None:
    """Why namespaced sshd hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    if not shutil.which("ip"):
        return "no ip command (Debian: iproute2)"
    if not Path(SSHD).exists():
        return f"no {SSHD} (Debian: apt-get install openssh-server)"
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "no ssh client (Debian: apt-get install openssh-client)"
    probe = f"qc-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _die_with_test() -> None:
    """In sshd between fork and exec: killed when the test process dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _kill_and_delete(netns: str) -> None:
    """Kill what runs in a namespace and delete it (its veth ends go with it, and so do their peers)."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", netns], capture_output=True)


def remove_stale() -> None:
    """Namespaces left by a test run that was killed before it could clean up (its pid is gone)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(r"^(qc-host\d+-(\d+))\b", listed, flags=re.MULTILINE):
        if not Path(f"/proc/{name[1]}").exists():
            _kill_and_delete(name[0])


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True)


def _wait_port(netns: str, address: str, port: int, sshd: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            raise RuntimeError(f"sshd in {netns} exited with {sshd.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"sshd in {netns} does not listen on {address}:{port} after {timeout} s")


@contextlib.contextmanager
def make_hosts(count: int, folder: Path) -> Iterator[list[Host]]:
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "id_ed25519"
    host_key = folder / "ssh_host_ed25519_key"
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    (folder / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    config = folder / "sshd_config"
    config.write_text(f"HostKey {host_key}\nAuthorizedKeysFile {folder}/authorized_keys\nPermitRootLogin yes\n"
                      "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                      f"PidFile none\nAcceptEnv LANG\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    remove_stale()
    hosts: list[Host] = []
    made: list[tuple[str, str]] = []
    tag = os.getpid() % 10000
    subnet = free_subnet()
    try:
        for i in range(1, count + 1):
            netns, veth = f"qc-host{i}-{os.getpid()}", f"qc{tag}h{i}"
            gateway, address = f"{subnet}.{i}.1", f"{subnet}.{i}.2"
            _ip("netns", "add", netns)
            made.append((netns, veth))
            _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}n")
            _ip("link", "set", f"{veth}n", "netns", netns)
            _ip("addr", "add", f"{gateway}/24", "dev", veth)
            _ip("link", "set", veth, "up")
            _ip("addr", "add", f"{address}/24", "dev", f"{veth}n", netns=netns)
            _ip("link", "set", f"{veth}n", "up", netns=netns)
            _ip("link", "set", "lo", "up", netns=netns)
            _ip("route", "add", "default", "via", gateway, netns=netns)
            log = (folder / f"sshd-{i}.log").open("wb")
            sshd = subprocess.Popen(["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(config),
                                     "-o", f"ListenAddress={address}", "-p", "22"], stdout=log, stderr=log,
                                    preexec_fn=_die_with_test)
            slot = folder / f"slot-{i}.json"
            slot.write_text(json.dumps({
                "client": "ssh", "host": address, "port": "22", "username": "root", "password": "",
                "prompt": r"^.*[\#\$]\s*$", "identity_file": str(key), "preferred_authentication": "publickey",
                "timeout": 30}))
            hosts.append(Host(netns, address, gateway, slot, sshd))
            _wait_port(netns, address, 22, sshd)
        yield hosts
    finally:
        for host in hosts:
            host.sshd.terminate()
            try:
                host.sshd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                host.sshd.kill()
                host.sshd.wait()
        for netns, veth in made:
            subprocess.run(["ip", "link", "delete", veth], capture_output=True)
            _kill_and_delete(netns)  # with what still runs there (a session sshd forked)
        _end_sessions(key)


def _end_sessions(key: Path) -> None:
    """End the ssh clients that logged in with ``key`` and the aexpect helpers holding them: avocado's remote
    spawner leaves its sessions open after the job (an aexpect_helper, bash -c ssh ..., ssh), and with the
    hosts gone they would wait forever."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(key).encode() not in (entry / "cmdline").read_bytes():
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            pids.add(int(entry.name))
            if b"aexpect_helper" in Path(f"/proc/{parent}/cmdline").read_bytes():
                pids.add(parent)
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
