"""A second oracle: the host's real libvirt runs every case, and its QEMU command line is compared with the suite's.

The suite builds the argv libvirt 11.3 would build (conformance/argv/); this module asks a real libvirt.
It starts a private ``libvirtd`` from Debian's packages (``libvirt-daemon``, ``libvirt-daemon-driver-qemu``,
``libvirt-clients``), creates each case's domain paused on the host's QEMU (``virsh create --paused``),
reads the command line QEMU really received (``/proc/PID/cmdline``) and compares it, as a sequence, with the
suite's argv for the same rendered domain and the same QEMU. The two libvirts are different releases
(Debian 12 ships 9.0), so a difference one of them explains is normalised away, but only by a written rule
(``RULES``: each names the libvirt release that changed the behaviour and what it normalises); anything
else is a difference, listed with its first differing token.

The private libvirtd leaves no state on the host and nothing running after it:
- it runs in its own mount, PID and network namespaces (``unshare``): libvirt's fixed system paths
  (/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt) are bind mounts of
  folders under a private root, so its config (``qemu.conf``: user and group root, ``security_driver =
  "none"``, no cgroup controllers), sockets, logs, capability cache and domain state are all there;
- ``virtlogd`` runs beside it, both children of a small init that reaps QEMU's daemonised processes;
- it has a network namespace of its own, where the taps and bridges a case names are created before it starts;
- the client connects to the private socket (``qemu:///system?socket=ROOT/run/libvirt-sock``);
- stopping destroys every domain, ends the daemons and, with the PID namespace, every process in it; the
  namespace's init dies with the thread that started it (PR_SET_PDEATHSIG), so a killed or interrupted
  caller leaves no libvirtd, virtlogd or QEMU behind (Ctrl-C and SIGTERM: conformance/interrupt.py).

The host needs the packages above and the ``libvirt-qemu`` user they expect (``useradd --system
libvirt-qemu``); the empty mount points (/var/lib/libvirt and friends) are created when missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

from conformance.errors import ConformanceError, LiveError

if TYPE_CHECKING:
    from conformance.caps.model import Capabilities
    from conformance.cases import Case, Catalogue
    from conformance.live.boot import Target

COMMANDS = {"libvirtd": "libvirt-daemon", "virtlogd": "libvirt-daemon", "virsh": "libvirt-clients",
            "unshare": "util-linux", "nsenter": "util-linux", "ip": "iproute2", "openssl": "openssl"}
START_TIMEOUT = 30.0  # s until libvirtd answers (measured 3-7 s on 2 loaded cores; its QEMU probes come later)
VIRSH_TIMEOUT = 120.0  # s per virsh call; the first `create` waits for libvirt's QEMU probe (2-5 s per binary)
STOP_TIMEOUT = 15.0  # s for the daemons to end after SIGTERM before everything in the namespace is killed

# libvirt's fixed paths for a privileged daemon -> the folder under the private root that replaces each
MOUNTS = {"/etc/libvirt": "etc", "/run/libvirt": "run", "/var/lib/libvirt": "lib", "/var/log/libvirt": "log",
          "/var/cache/libvirt": "cache"}

# SPICE TLS on, as libvirt's test harness has it: the certificates are made for each run in the private root
# (OUTPUT/libvirtd/etc/pki-spice, /etc/libvirt/pki-spice inside the namespace), never in the host's /etc/pki
SPICE_TLS_DIR = "pki-spice"
QEMU_CONF = f"""\
# a private libvirtd of qemu-conformance (conformance/libvirt_oracle.py)
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
remember_owner = 0
spice_tls = 1
spice_tls_x509_cert_dir = "/etc/libvirt/{SPICE_TLS_DIR}"
"""

LIBVIRTD_CONF = """\
# a private libvirtd of qemu-conformance (conformance/libvirt_oracle.py)
unix_sock_dir = "/run/libvirt"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

VIRTLOGD_CONF = """\
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
"""



def make_test_certificates(folder: Path) -> None:
    """A throw-away CA and a server certificate signed by it, as QEMU's x509 credentials folder wants them
    (ca-cert.pem, server-cert.pem, server-key.pem): for SPICE TLS ports in the private libvirtd only."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)

    def openssl(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, timeout=60)
        if proc.returncode:
            raise LibvirtUnavailable(f"openssl {args[0]} failed making test certificates in {folder}: "
                                     f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=qemu-conformance test CA",
            "-keyout", "ca-key.pem", "-out", "ca-cert.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server-key.pem",
            "-out", "server.csr")
    openssl("x509", "-req", "-days", "2", "-in", "server.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
            "-set_serial", "1", "-out", "server-cert.pem")


# the namespace's init (PID 1): bind the private folders over libvirt's paths, start virtlogd and libvirtd,
# reap every process that ends in the namespace (QEMU is daemonised by libvirt: its parent is this init),
# and on SIGTERM end libvirtd then virtlogd. When it exits, the kernel kills whatever is left in the namespace.
_INIT = r"""
import os, signal, subprocess, sys, time
root = sys.argv[1]
mounts = dict(zip(sys.argv[2::2], sys.argv[3::2]))
for path, sub in mounts.items():
    subprocess.run(["mount", "--bind", os.path.join(root, sub), path], check=True)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
class Stop(Exception):
    pass
def on_term(*_):
    raise Stop
signal.signal(signal.SIGTERM, on_term)
log = open(os.path.join(root, "daemons.log"), "ab", buffering=0)
logd = subprocess.Popen(["virtlogd", "-f", "/etc/libvirt/virtlogd.conf", "-p", "/run/libvirt/virtlogd.pid"],
                        stdout=log, stderr=log)
end = time.monotonic() + 10
while not os.path.exists("/run/libvirt/virtlogd-sock") and time.monotonic() < end and logd.poll() is None:
    time.sleep(0.02)
lvd = subprocess.Popen(["libvirtd", "-f", "/etc/libvirt/libvirtd.conf", "-p", "/run/libvirt/libvirtd.pid"],
                       stdout=log, stderr=log)
try:
    while lvd.poll() is None:  # reap whatever ends here (a SIGTERM interrupts the wait)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
except Stop:
    pass
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for proc in (lvd, logd):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(float(os.environ.get("STOP_TIMEOUT", "10")))
        except subprocess.TimeoutExpired:
            proc.kill()
"""


class LibvirtUnavailable(ConformanceError):
    """The host cannot run the private libvirtd (a package, a user or a permission is missing)."""


class LibvirtError(LiveError):
    """libvirtd or virsh failed; the message is libvirt's."""


def _die_with_parent_thread() -> None:
    """Between fork and exec: die with the thread that started us (see conformance/qemu/process.py)."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def missing_requirements() -> list[str]:
    """What this host lacks to run the private libvirtd, each with its fix ([] when nothing)."""
    missing = [f"{cmd} (apt-get install {pkg})" for cmd, pkg in COMMANDS.items() if shutil.which(cmd) is None]
    if not Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so").exists() and \
            not any(Path("/usr/lib").glob("*/libvirt/connection-driver/libvirt_driver_qemu.so")):
        missing.append("libvirt's QEMU driver (apt-get install libvirt-daemon-driver-qemu)")
    try:
        import pwd

        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        missing.append("the libvirt-qemu user (useradd --system --no-create-home libvirt-qemu)")
    if os.geteuid() != 0:
        missing.append("root (the private libvirtd runs QEMU as root in its own mount and PID namespaces)")
    return missing


def _host_pid(ns_pid: int, ns_init: int) -> int | None:
    """The host PID of the process whose PID is ``ns_pid`` in the PID namespace whose init has host PID
    ``ns_init`` (from /proc/*/status NSpid), or None."""
    try:
        ns = os.readlink(f"/proc/{ns_init}/ns/pid_for_children")
    except OSError:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != ns:
                continue
            for line in Path(f"/proc/{entry.name}/status").read_text().splitlines():
                if line.startswith("NSpid:") and int(line.split()[-1]) == ns_pid:
                    return int(entry.name)
        except (OSError, ValueError):
            continue
    return None


@dataclass
class LibvirtDomain:
    """A domain the private libvirtd started: its name, QEMU's PID on this host and the argv QEMU received."""

    name: str
    pid: int
    argv: list[str]


@dataclass
class PrivateLibvirtd:
    """A libvirtd (with virtlogd) of our own, in its own namespaces, under ``root``; a context manager that
    always stops everything it started."""

    root: Path
    keep: bool = False  # keep the private root (logs, domain state) after stopping
    version: str = ""
    started_s: float = 0.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _domains: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.root / 'run' / 'libvirt-sock'}"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def start(self) -> PrivateLibvirtd:
        missing = missing_requirements()
        if missing:
            raise LibvirtUnavailable("cannot run a private libvirtd: missing " + "; ".join(missing),
                                     hint="see docs/libvirt-oracle.md")
        began = time.monotonic()
        for sub in MOUNTS.values():
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        make_test_certificates(self.root / "etc" / SPICE_TLS_DIR)
        (self.root / "etc" / "qemu.conf").write_text(QEMU_CONF)
        (self.root / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        (self.root / "etc" / "virtlogd.conf").write_text(VIRTLOGD_CONF)
        for path in MOUNTS:  # the mount points (empty folders) libvirt-daemon-system would have made
            Path(path).mkdir(parents=True, exist_ok=True)
        argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--net",
                "--kill-child", sys.executable, "-c", _INIT, str(self.root),
                *(x for path, sub in MOUNTS.items() for x in (path, sub))]
        env = {**os.environ, "STOP_TIMEOUT": str(STOP_TIMEOUT - 2)}
        with open(self.root / "unshare.log", "wb") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                          env=env, preexec_fn=_die_with_parent_thread)
        try:
            self._wait_ready()
        except BaseException:  # a daemon that did not come up, or Ctrl-C meanwhile: nothing stays behind
            self.stop()
            raise
        self.started_s = time.monotonic() - began
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        end = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise LibvirtError(f"the private libvirtd ended at once: {self._daemon_log_tail()}")
            if (self.root / "run" / "libvirt-sock").exists():
                done = self.virsh("version", "--daemon", check=False, timeout=10)
                if done.returncode == 0:
                    self.version = next((line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                                         if line.startswith("Running against daemon")), "")
                    return
            if time.monotonic() > end:
                raise LibvirtError(f"the private libvirtd did not answer within {START_TIMEOUT:.0f} s: "
                                   f"{self._daemon_log_tail()}")
            time.sleep(0.1)

    def _daemon_log_tail(self) -> str:
        from conformance.qemu.process import file_tail

        for path in (self.root / "log" / "libvirtd.log", self.root / "daemons.log", self.root / "unshare.log"):
            tail = file_tail(path, 3).strip()
            if tail:
                return tail.splitlines()[-1]
        return "no log"

    def virsh(self, *args: str, check: bool = True, timeout: float = VIRSH_TIMEOUT
              ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c URI ARGS`` against this daemon; LibvirtError with libvirt's message on failure
        when ``check``."""
        done = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise LibvirtError(libvirt_message(done.stderr) or f"virsh {args[0]} exited {done.returncode}")
        return done

    def create(self, xml_file: Path, name: str, *, paused: bool = True) -> LibvirtDomain:
        """``virsh create [--paused]``: start the domain (transient); the argv its QEMU received. The host
        network devices it names (a precreated tap, a bridge) are made first, in the daemon's own network
        namespace."""
        self.host_devices(xml_file)
        with self._lock:
            self._domains.add(name)
        self.virsh("create", str(xml_file), *(["--paused"] if paused else []))
        return LibvirtDomain(name, *self._qemu_of(name))

    def host_devices(self, xml_file: Path) -> list[str]:
        """Create, in the namespace's private network, the taps (<interface type='ethernet'> with <target
        managed='no'>) and bridges (<interface type='bridge'>) the domain expects to find; their names."""
        from lxml import etree

        assert self._proc is not None
        init = _namespace_init(self._proc.pid)
        if init is None:
            return []
        made = []
        for iface in etree.parse(str(xml_file)).iterfind("devices/interface"):
            target, source = iface.find("target"), iface.find("source")
            if iface.get("type") == "ethernet" and target is not None and target.get("managed") == "no":
                made.append(self._ip(init, target.get("dev", ""), ["tuntap", "add", "dev", "{}", "mode", "tap"]))
            elif iface.get("type") == "bridge" and source is not None and source.get("bridge"):
                made.append(self._ip(init, source.get("bridge", ""), ["link", "add", "{}", "type", "bridge"]))
        return [m for m in made if m]

    def _ip(self, init: int, name: str, add: list[str]) -> str:
        net = ["nsenter", f"--net=/proc/{init}/ns/net", "ip"]
        if not name or subprocess.run([*net, "link", "show", name], capture_output=True).returncode == 0:
            return ""
        subprocess.run([*net, *(name if a == "{}" else a for a in add)], check=True, capture_output=True)
        subprocess.run([*net, "link", "set", name, "up"], check=True, capture_output=True)
        return name

    def _qemu_of(self, name: str) -> tuple[int, list[str]]:
        pid_file = self.root / "run" / "qemu" / f"{name}.pid"
        try:
            ns_pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise LibvirtError(f"libvirt started {name} but its pid file {pid_file} is unreadable: {exc}") from exc
        assert self._proc is not None
        init = _namespace_init(self._proc.pid)
        pid = _host_pid(ns_pid, init) if init else None
        if pid is None:
            raise LibvirtError(f"QEMU of {name} (pid {ns_pid} in the namespace) is not running")
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return pid, raw.decode("utf-8", "surrogateescape").split("\0")[:-1]

    def destroy(self, name: str) -> None:
        """``virsh destroy``: end the domain's QEMU (a transient domain is then gone)."""
        self.virsh("destroy", name, check=False, timeout=30)
        with self._lock:
            self._domains.discard(name)

    def cpu_seconds(self) -> float:
        """CPU time of everything in the namespace so far: its init, the daemons and every QEMU that ended
        (reaped by the init), from /proc (QEMU is not a child of this process, so os.times() misses it)."""
        if self._proc is None:
            return 0.0
        init = _namespace_init(self._proc.pid)
        if init is None:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in [str(init), *Path(f"/proc/{init}/task/{init}/children").read_text().split()]:
            with contextlib.suppress(OSError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total / tick

    def stop(self) -> None:
        """Destroy every domain still running, end libvirtd and virtlogd, and everything in the namespace."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with self._lock:
                names = sorted(self._domains)
            for name in names:
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    self.destroy(name)
            init = _namespace_init(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                if init:
                    os.kill(init, signal.SIGTERM)
                else:
                    proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()  # --kill-child: the namespace's init, and with it every process in it
                proc.wait(5)
        self._proc = None
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateLibvirtd:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _namespace_init(unshare_pid: int) -> int | None:
    """The host PID of unshare's forked child (the namespace's init)."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def libvirt_message(stderr: str) -> str:
    """libvirt's error from virsh's stderr, on one line ('error: ' prefixes dropped)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line.removeprefix("error: ") for line in lines]
    lines = [line for line in lines if not line.startswith(("Failed to create domain", "Failed to define domain",
                                                           "Failed to start domain"))]
    return " ".join(lines)


@contextlib.contextmanager
def private_libvirtd(root: Path | None = None, *, keep: bool = False) -> Iterator[PrivateLibvirtd]:
    """A started private libvirtd under ``root`` (a new temporary folder by default), always stopped after."""
    made = root is None
    folder = Path(tempfile.mkdtemp(prefix="libvirt-oracle-")) if root is None else root
    daemon = PrivateLibvirtd(folder, keep=keep or not made)
    try:
        yield daemon.start()
    finally:
        daemon.stop()



# --- the comparison -------------------------------------------------------------------------------------


@dataclass
class CaseOutcome:
    """One case on one QEMU binary under the private libvirtd."""

    case: str
    arch: str
    status: str  # identical | differing | refused (by libvirt) | both-refused | suite-refused | error
    detail: str = ""  # libvirt's message, the first differing token, or the error
    rules: list[str] = field(default_factory=list)  # the normalisation rules that changed something
    libvirt_argv: list[str] = field(default_factory=list)
    suite_argv: list[str] = field(default_factory=list)
    seconds: float = 0.0


def first_difference(a: Sequence[str], b: Sequence[str]) -> tuple[int, str, str] | None:
    """(index, a's token, b's token) where two argvs first differ ('<end>' past one's end), or None."""
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "<end>"
        y = b[i] if i < len(b) else "<end>"
        if x != y:
            return i, x, y
    return None


def compare_case(daemon: PrivateLibvirtd, case: Case, target: Target, catalogue: Catalogue, output: Path
                 ) -> CaseOutcome:
    """Start one case paused under the private libvirtd and compare QEMU's argv with the suite's."""
    from conformance.live.adapt import NeedsHardware
    from conformance.live.boot import prepare_vm, vm_folder

    began = time.monotonic()
    out = CaseOutcome(case.name, target.caps.arch, "error")
    vm_dir = vm_folder(output, case, target)
    refusal = ""  # the suite's
    try:
        prepared = prepare_vm(case, target, catalogue, output, vm_dir)
    except NeedsHardware:  # a hostdev without a substitute: the argv was built, the live adaptation is not
        prepared = None
    except ConformanceError as exc:
        prepared, refusal = None, exc.message
    if prepared is not None:
        out.suite_argv = prepared.argv
    try:
        started = daemon.create(vm_dir / "domain.xml", case.name, paused=True)
    except LibvirtError as exc:
        out.status = "both-refused" if refusal else "refused"
        out.detail = f"libvirt: {exc.message}" + (f"; suite: {refusal}" if refusal else "")
        out.seconds = time.monotonic() - began
        return out
    try:
        out.libvirt_argv = started.argv
    finally:
        daemon.destroy(case.name)
    out.seconds = time.monotonic() - began
    if refusal:
        out.status, out.detail = "suite-refused", f"libvirt started it; suite: {refusal}"
        return out
    if prepared is None:
        out.detail = "libvirt started a domain whose hostdev the suite cannot substitute here"
        return out
    suite, real, out.rules = normalise(out.suite_argv, out.libvirt_argv, daemon.version)
    diff = first_difference(suite, real)
    if diff is None:
        out.status = "identical"
    else:
        i, mine, theirs = diff
        out.status, out.detail = "differing", f"token {i}: suite {mine!r}, libvirt {theirs!r}"
    out.seconds = time.monotonic() - began
    return out


def normalise(suite: list[str], real: list[str], host: str = "9.0.0") -> tuple[list[str], list[str], list[str]]:
    """Both argvs after the written rules that hold for a host libvirt of version ``host`` (RULES), and the
    names of the rules that changed either."""
    applied: list[str] = []
    for r in RULES:
        if not r.applies(host):
            continue
        new_suite, new_real = r.edit(list(suite), list(real))
        if (new_suite, new_real) != (suite, real):
            applied.append(r.name)
        suite, real = new_suite, new_real
    return suite, real, applied


# --- the written normalisation rules ----------------------------------------------------------------------

EMULATED = "11.3.0"  # the libvirt the suite's argv builder follows (its golden argv, libvirt's corpus)


def version_tuple(text: str) -> tuple[int, ...]:
    """'9.0.0' -> (9, 0, 0); '' -> ()."""
    return tuple(int(x) for x in text.split(".") if x.isdigit())


Edit = Callable[[list[str], list[str]], tuple[list[str], list[str]]]


@dataclass(frozen=True)
class Rule:
    """A written normalisation rule.

    ``kind``: ``version`` - libvirt release ``libvirt`` changed how it builds this, so a host libvirt older
    than that release (and the suite, which follows EMULATED) differ; the rule holds only for such a host.
    ``harness`` - the suite follows libvirt's test harness (qemuxmlconftest) where a running libvirt differs
    in every release (it probes images, opens file descriptors, generates ids). ``scope`` - options a running
    libvirt adds to manage QEMU, which the suite leaves to its live stage (and libvirt's corpus compare drops).
    """

    name: str
    kind: str  # version | harness | scope
    libvirt: str  # version: the release that changed it ("9.1.0"; "<=11.3.0" when only known to be after the
    #               host's and by EMULATED); harness/scope: the releases it holds for
    normalises: str
    edit: Edit = field(repr=False, compare=False)

    def applies(self, host: str) -> bool:
        if self.kind != "version":
            return True
        changed = version_tuple(self.libvirt.removeprefix("<="))
        return version_tuple(host) < changed <= version_tuple(EMULATED)


def _pairs(argv: list[str]) -> list[list[str]]:
    """argv[1:] as [option] / [option, value] groups (conformance.argv.options.options)."""
    from conformance.argv.options import options

    return [[opt] if value is None else [opt, value] for _, opt, value in options(argv)]


def _join(head: list[str], groups: list[list[str]]) -> list[str]:
    return head[:1] + [token for group in groups for token in group]


def _drop(argv: list[str], drop: Callable[[str, str | None], bool]) -> list[str]:
    return _join(argv, [g for g in _pairs(argv) if not drop(g[0], g[1] if len(g) > 1 else None)])


def _values(argv: list[str], option: str, change: Callable[[str], str]) -> list[str]:
    return _join(argv, [[g[0], change(g[1])] if g[0] == option and len(g) > 1 else g for g in _pairs(argv)])


def _real(edit: Callable[[list[str]], list[str]]) -> Edit:
    return lambda suite, real: (suite, edit(real))


def _suite(edit: Callable[[list[str]], list[str]]) -> Edit:
    return lambda suite, real: (edit(suite), real)


def _both(edit: Callable[[list[str]], list[str]]) -> Edit:
    return lambda suite, real: (edit(suite), edit(real))


def _management(opt: str, value: str | None) -> bool:
    if opt in ("-name", "-S", "-mon", "-sandbox", "-msg"):
        return True
    if opt == "-object" and value is not None and '"id":"masterKey0"' in value:
        return True
    return opt == "-chardev" and value is not None and "id=charmonitor" in value


def _m_as_size(value: str) -> str:
    return f"size={int(value) * 1024}k" if value.isdigit() else value


def _itco(suite: list[str], real: list[str]) -> tuple[list[str], list[str]]:
    suite = _drop(suite, lambda o, v: o == "-global" and v == "ICH9-LPC.noreboot=off")
    if "-watchdog-action" not in real:
        suite = _drop(suite, lambda o, v: o == "-watchdog-action" and v == "reset")
    return suite, real


def _no_clusters(value: str) -> str:
    return re.sub(r",clusters=\d+", "", value)


def _no_null_backing(value: str) -> str:
    if not value.startswith("{"):
        return value
    obj = json.loads(value)
    if "backing" not in obj or obj["backing"] is not None:
        return value
    del obj["backing"]
    return json.dumps(obj, separators=(",", ":"))


def _fd_placeholder(value: str) -> str:
    return re.sub(r"(?<=[,{\"])(fd\"?[=:]\"?)\d+", r"\1N", value)


def _sorted_json(value: str) -> str:
    return json.dumps(json.loads(value), sort_keys=True, separators=(",", ":")) if value.startswith("{") else value


def _tcg_tap_vhost(suite: list[str], real: list[str]) -> tuple[list[str], list[str]]:
    from conformance.argv.options import parse_props

    if not any(g == ["-accel", "tcg"] for g in _pairs(suite)):
        return suite, real
    plain = {parse_props(g[1]).get("id") for g in _pairs(real)
             if g[0] == "-netdev" and len(g) > 1 and "vhost" not in parse_props(g[1])}

    def drop(value: str) -> str:
        props = parse_props(value)
        if props.get("id") not in plain or "vhost" not in props:
            return value
        if value.startswith("{"):
            return json.dumps({k: v for k, v in props.items() if k not in ("vhost", "vhostfd")},
                              separators=(",", ":"))
        return re.sub(r",vhost=on|,vhostfd=\w+", "", value)

    return _values(suite, "-netdev", drop), real


HARNESS_GENID = "00010203-0405-4607-8809-0a0b0c0d0e0f"  # the GUID libvirt's test harness gives a <genid/>


def _genid(suite: list[str], real: list[str]) -> tuple[list[str], list[str]]:
    def mask(value: str) -> str:
        return re.sub(r'("driver":"vmgenid","guid":")[0-9a-f-]{36}', r"\1GUID", value)

    if not any(HARNESS_GENID in token for token in suite):
        return suite, real
    return _values(suite, "-device", mask), _values(real, "-device", mask)


RULES: list[Rule] = [
    Rule("management-options", "scope", "every release",
         "drops from libvirt's argv what it adds to manage a running QEMU: -name, -S, the master-key secret "
         "object, the monitor's -chardev and -mon, -sandbox, -msg (the suite's live stage adds its own QMP)",
         _real(lambda real: _drop(real, _management))),
    Rule("memory-size-keyword", "version", "9.5.0",
         "-m: libvirt 9.5 writes the initial memory as size=KiBk where earlier releases write MiB (-m 256 -> "
         "-m size=262144k; libvirt's QE suite tp-libvirt expects the new form from 9.5.0 on)",
         _real(lambda real: _values(real, "-m", _m_as_size))),
    Rule("itco-watchdog", "version", "9.1.0",
         "q35: libvirt 9.1 adds the chipset's iTCO watchdog to the domain: -global ICH9-LPC.noreboot=off, and "
         "-watchdog-action reset when no other watchdog sets the action; dropped from the suite's argv",
         _itco),
    Rule("smp-clusters", "version", "10.1.0",
         "-smp: libvirt 10.1 writes clusters= (the CPU topology's clusters); dropped from the suite's -smp",
         _suite(lambda suite: _values(suite, "-smp", _no_clusters))),
    Rule("blockdev-key-order", "version", "<=11.3.0",
         "-blockdev: libvirt 11.3 writes a storage node's cache after auto-read-only and discard, 9.0 before "
         "them (the release between them not pinned); QEMU reads the JSON as an object, so both sides' "
         "-blockdev objects are compared with their keys sorted",
         _both(lambda argv: _values(argv, "-blockdev", _sorted_json))),
    Rule("probed-backing-null", "harness", "every release",
         "-blockdev: a running libvirt probes an image and writes \"backing\":null on a format node without "
         "a backing file; the test harness (and the suite) probe nothing; dropped from libvirt's argv",
         _real(lambda real: _values(real, "-blockdev", _no_null_backing))),
    Rule("passed-fd-numbers", "harness", "every release",
         "fd=N of a file descriptor libvirt opens and passes (a listening chardev socket, a tap): the test "
         "harness numbers it 1729, a running libvirt uses the descriptor it got; N on both sides",
         _both(lambda argv: _join(argv, [[g[0], _fd_placeholder(g[1])] if len(g) > 1 else g
                                         for g in _pairs(argv)]))),
    Rule("tcg-tap-without-vhost", "harness", "every release",
         "-netdev tap of a TCG (type='qemu') domain: a running libvirt opens vhost-net only for a KVM domain "
         "(qemuInterfaceOpenVhostNet), the test harness gives every tap vhost=on and a vhostfd; dropped from "
         "the suite's netdev where libvirt's has no vhost",
         _tcg_tap_vhost),
    Rule("generated-genid", "harness", "every release",
         "vmgenid guid= of a <genid/> without a value: a running libvirt generates one, the harness uses "
         f"{HARNESS_GENID}; GUID on both sides (only when the suite's is the harness's)",
         _genid),
]


# case -> why the host's libvirt 9.0 and the suite (11.3) differ where no token rule can normalise it; a case
# listed here still counts as differing, but does not fail the comparison (a new difference does)
# None now: the storage-rich cases differed until a transitional virtio filesystem took a conventional PCI slot
# (qemuDomainDeviceCalculatePCIConnectFlags), which moved the pcie-pci-bridge right after the first root port.
KNOWN_DIFFERENCES: dict[str, str] = {}


# --- booting under libvirt --------------------------------------------------------------------------------

BOOT_TIMEOUT = 90.0  # s from resume to the guest's boot report (2-6 s measured under TCG; loaded CI is slower)


@dataclass
class BootOutcome:
    """One case booted under the private libvirtd: the guest's report checked against QEMU's argv."""

    case: str
    arch: str
    ok: bool
    detail: str
    checked: int = 0
    seconds: float = 0.0


def with_guest_kernel(xml: str, kernel: str, initrd: str, append: str) -> str:
    """The domain with the test guest's kernel, initrd and command line in <os> (what the suite's live stage
    passes as -kernel/-initrd/-append; under libvirt it has to be the domain's)."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    os_el = root.find("os")
    assert os_el is not None
    for tag, text in (("kernel", kernel), ("initrd", initrd), ("cmdline", append)):
        el = os_el.find(tag)
        if el is None:
            el = etree.SubElement(os_el, tag)
        el.text = text
    return etree.tostring(root, encoding="unicode")


def _read_pty(path: str, done: Callable[[bytes], bool], timeout: float, log: Path) -> None:
    """Read a pseudo-terminal (the domain's serial console) into ``log`` until ``done(chunk)`` says so or
    ``timeout`` passes."""
    import select
    import termios
    import tty

    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(termios.error):
            tty.setraw(fd)
        end = time.monotonic() + timeout
        with open(log, "ab") as out:
            while time.monotonic() < end:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: QEMU closed its side
                    return
                out.write(chunk)
                if done(chunk):
                    return
    finally:
        os.close(fd)


def boot_case(daemon: PrivateLibvirtd, case: Case, target: Target, catalogue: Catalogue, output: Path, *,
              timeout: float = BOOT_TIMEOUT) -> BootOutcome:
    """Boot one case with the test guest under the private libvirtd and check the guest's report against the
    argv QEMU received. The console is the domain's own first serial port (a pty): the domain is created
    paused, the pty opened, then resumed, so no output is lost."""
    from conformance.argv.options import devices
    from conformance.live.boot import prepare_vm, vm_folder
    from conformance.live.checks import MachineFacts, check_report
    from conformance.live.guest_report import ReportReader

    began = time.monotonic()
    arch = target.caps.arch
    vm_dir = vm_folder(output, case, target)
    try:
        prepared = prepare_vm(case, target, catalogue, output, vm_dir)
    except ConformanceError as exc:
        return BootOutcome(case.name, arch, False, f"cannot prepare: {exc.message}")
    guest = prepared.target.guest
    assert guest is not None
    boot = guest.boot_args()
    xml = with_guest_kernel((vm_dir / "domain.xml").read_text(), boot[1], boot[3], boot[5])
    boot_xml = vm_dir / "domain-libvirt-boot.xml"
    boot_xml.write_text(xml)
    name = case.name
    try:
        started = daemon.create(boot_xml, name, paused=True)
    except LibvirtError as exc:
        return BootOutcome(case.name, arch, False, f"libvirt refused it: {exc.message}")
    try:
        pty = daemon.virsh("ttyconsole", name).stdout.strip()
        if not pty:
            return BootOutcome(case.name, arch, False, "the domain has no serial console (pty)")
        reader = ReportReader()
        console = vm_dir / "console-libvirt.log"
        resume = threading.Timer(0.2, lambda: daemon.virsh("resume", name, check=False))
        resume.start()
        _read_pty(pty, lambda chunk: bool(reader.feed(chunk)) and reader.boot_complete, timeout, console)
        resume.join()
        report = reader.report
        if not report.boot_complete:
            return BootOutcome(case.name, arch, False, f"no boot report within {timeout:.0f} s (console: {console})",
                               seconds=time.monotonic() - began)
        result = check_report(report, devices(started.argv), guest.has_driver, MachineFacts.from_argv(started.argv))
    finally:
        daemon.destroy(name)
    seconds = time.monotonic() - began
    if result.failures:
        return BootOutcome(case.name, arch, False, "; ".join(result.failures), len(result.checked), seconds)
    return BootOutcome(case.name, arch, True, f"{len(result.checked)} checks passed", len(result.checked), seconds)


# --- the whole comparison ---------------------------------------------------------------------------------

# cases booted under libvirt by default: each has a pty serial port of its own (the guest's console)
BOOT_CASES = ("serial-console", "pc-misc-rich", "virt-pci-serial-2x")


@dataclass
class OracleRun:
    """Everything one comparison found, per case and arch."""

    libvirt: str = ""
    outcomes: list[CaseOutcome] = field(default_factory=list)
    boots: list[BootOutcome] = field(default_factory=list)
    start_s: float = 0.0
    total_s: float = 0.0
    cpu_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def started(self) -> int:
        return self.count("identical") + self.count("differing")

    def summary(self) -> str:
        """The headline: started / identical after the rules / differing / refused by libvirt."""
        return (f"libvirt {self.libvirt}: {len(self.outcomes)} case/arch domains, {self.started} started, "
                f"{self.count('identical')} identical after the rules, {self.count('differing')} differing, "
                f"{self.count('refused')} refused by libvirt, {self.count('both-refused')} refused by both, "
                f"{self.count('suite-refused')} refused by the suite only, "
                f"{self.count('error')} errors; boots {sum(b.ok for b in self.boots)}/{len(self.boots)} checked; "
                f"{self.total_s:.0f} s wall, {self.cpu_s:.0f} s CPU")

    def lines(self) -> list[str]:
        out = []
        for o in self.outcomes:
            if o.status != "identical":
                out.append(f"{o.status:13} {o.case} [{o.arch}]: {o.detail}")
        for b in self.boots:
            out.append(f"boot {'ok' if b.ok else 'FAIL':4}     {b.case} [{b.arch}]: {b.detail} ({b.seconds:.1f} s)")
        return out

    def as_json(self) -> dict[str, object]:
        from dataclasses import asdict

        return {"libvirt": self.libvirt, "emulated": EMULATED, "summary": self.summary(),
                "rules": [{"name": r.name, "kind": r.kind, "libvirt": r.libvirt, "normalises": r.normalises}
                          for r in RULES],
                "outcomes": [asdict(o) for o in self.outcomes], "boots": [asdict(b) for b in self.boots],
                "start_s": round(self.start_s, 2), "total_s": round(self.total_s, 2), "cpu_s": round(self.cpu_s, 2)}


def _cpu_seconds() -> float:
    own, children = os.times()[:2], os.times()[2:4]
    return sum(own) + sum(children)


def run_oracle(binaries: Sequence[Path], output: Path, *, patterns: list[str] | None = None,
               boot: Sequence[str] = BOOT_CASES, say: Callable[[str], None] = lambda _m: None) -> OracleRun:
    """Every case (matching ``patterns``) on every binary under one private libvirtd; ``boot``: the cases also
    booted with the test guest. Writes OUTPUT/libvirt-oracle.json."""
    from conformance.cases import load_catalogue, plan
    from conformance.interrupt import STOP
    from conformance.runner import make_target

    began, cpu = time.monotonic(), _cpu_seconds()
    catalogue = load_catalogue()
    run = OracleRun()
    output.mkdir(parents=True, exist_ok=True)
    targets = [make_target(binary, say) for binary in binaries]
    with private_libvirtd(output / "libvirtd", keep=True) as daemon:
        run.libvirt, run.start_s = daemon.version, daemon.started_s
        say(f"private libvirtd {daemon.version} up in {daemon.started_s:.1f} s ({daemon.root})")
        for target in targets:
            for case in catalogue.select(patterns):
                if STOP.is_set():  # Ctrl-C or SIGTERM (conformance/interrupt.py): stop between domains
                    break
                what = plan(case, target.caps)
                if not what.run or what.expect_error or "argv" not in case.stages:
                    continue
                outcome = compare_case(daemon, case, target, catalogue, output)
                run.outcomes.append(outcome)
                say(f"  {outcome.status:13} {case.name} [{target.caps.arch}] {outcome.detail[:160]}")
            for case in catalogue.select(patterns):
                if case.name in boot and case.machine_for(target.caps.arch) and target.guest is not None \
                        and not STOP.is_set():
                    booted = boot_case(daemon, case, target, catalogue, output)
                    run.boots.append(booted)
                    say(f"  boot {'ok' if booted.ok else 'FAIL'} {case.name} [{target.caps.arch}]: {booted.detail}")
        namespace_cpu = daemon.cpu_seconds()
    run.total_s, run.cpu_s = time.monotonic() - began, _cpu_seconds() - cpu + namespace_cpu
    (output / "libvirt-oracle.json").write_text(json.dumps(run.as_json(), indent=1) + "\n")
    return run


# --- validation parity over libvirt's corpus ----------------------------------------------------------------

# why the host's libvirt 9.0 and the suite disagree on a corpus domain, by kind (read in libvirt 11.3's source and
# its test list, tests/qemuxmlconftest.c: DO_TEST_CAPS_LATEST_PARSE_ERROR is a define-time refusal,
# DO_TEST_CAPS_LATEST_FAILURE one at start, after the domain parsed and validated)
START_TIME = "start-time"  # libvirt refuses it when starting (define never gets there); the suite refusing is right
QEMU_REFUSES = "qemu-refuses"  # libvirt builds the argv; the host's QEMU has no such device (the suite's check)
VERSION = "version"  # libvirt 9.0 and 11.3 differ here; the suite follows 11.3
HOST = "host"  # the host's configuration is not libvirt's test harness's (qemu.conf, firmware descriptors)
UNSUPPORTED = "unsupported"  # the argv builder refuses the element by name: not built yet (class (d))
PARITY_KINDS = (START_TIME, QEMU_REFUSES, VERSION, HOST, UNSUPPORTED)


class ParityVerdict(NamedTuple):
    """Why libvirt 9.0 (define) and the suite disagree on a corpus domain. It explains the disagreement only
    while the refusing side's message still contains ``refusal`` (a different refusal is a new disagreement)."""

    kind: str  # one of PARITY_KINDS
    refusal: str  # a part of the refusing side's message
    reason: str  # where libvirt decides it (11.3's function, the release that changed it)


def _v(kind: str, refusal: str, reason: str) -> ParityVerdict:
    return ParityVerdict(kind, refusal, reason)


_FIRMWARE = "firmware auto-selection runs at define from 9.2.0 (qemuDomainDefBootPostParse -> qemuFirmwareFillDomain " \
            "with ABI update), at start before; this host has no x86_64 firmware descriptor, so 11.3 refuses the " \
            "define as the suite does and 9.0 refuses the start"
_HOST_NUMA = "qemuBuildNumaCommandLine (virDomainNumatuneNodesetIsAvailable): the host has no such NUMA node"
_SHMEM_SIZE = "11.3 checks the size at define (qemuValidateDomainDeviceDefShmem); 9.0 only when starting"

# corpus domain -> verdict: every disagreement of --corpus-parity that is understood; the run counts the rest
PARITY_EXPLAINED: dict[str, ParityVerdict] = {
    # suite only refuses
    "chardev-backends-json": _v(UNSUPPORTED, "@tls='yes'", "TLS on a TCP chardev (tls-creds-x509) is not built yet"),
    "cpu-qemu-host-passthrough": _v(START_TIME, "CPU mode 'host-passthrough'", "qemuProcessUpdateGuestCPU refuses "
                                    "host-passthrough under TCG when starting, with the suite's message"),
    "disk-cdrom-usb-empty": _v(VERSION, "'usb' disk must not be empty", "11.3 refuses an empty USB disk at define "
                               "(qemuValidateDomainDeviceDefDiskFrontend); 9.0 defines it"),
    "disk-scsi": _v(QEMU_REFUSES, "no device type 'spapr-vscsi'", "libvirt writes -device spapr-vscsi for "
                    "model='ibmvscsi' on any arch (11.3's expected argv); QEMU x86_64 has no such device"),
    "disk-source-fd": _v(UNSUPPORTED, "@fdgroup", "a disk passed as an fd group (-add-fd) is not built yet; libvirt "
                         "needs the fds associated (virDomainFDAssociate) before it starts"),
    "disk-target-overflow": _v(VERSION, "Unknown disk name", "11.3's virDomainDiskDefAssignAddress refuses a disk "
                               "name whose index overflows, at define; 9.0 defines and builds it"),
    "hugepages-default-5M": _v(START_TIME, "hugetlbfs mount", "qemuGetDomainHupageMemPath finds no hugetlbfs mount "
                               "for the size when building the command line"),
    "memory-align-fail": _v(START_TIME, "overflowed after alignment", "qemuDomainAlignMemorySizes, when starting"),
    "net-many-models": _v(QEMU_REFUSES, "no device type 'idontexist'", "libvirt writes -device idontexist for an "
                          "unknown model (11.3's expected argv); QEMU refuses it"),
    "net-user-slirp-portforward": _v(VERSION, "<portForward>", "11.3 refuses <portForward> without passt at define "
                                     "(virDomainNetDefValidate); 9.0 defines it"),
    "net-vhostuser-fail": _v(START_TIME, "custom tap device path", "qemuDomainValidateActualNetDef, when building "
                             "the command line (9.0 has it too; its pretend start makes every NIC an ethernet one)"),
    "numatune-memnode-restrictive-mode-err-mixed": _v(VERSION, "'restrictive' mode is required", "virDomainNuma"
                                                      "DefValidate refuses this direction at define from 9.4.0; "
                                                      "9.0 only the other one"),
    "numatune-memnode-unavailable-restrictive": _v(START_TIME, "is unavailable", _HOST_NUMA),
    "numatune-static-nodeset-exceed-hostnode": _v(START_TIME, "is unavailable", _HOST_NUMA),
    "serial-tcp-chardev-telnets": _v(VERSION, "protocol 'tls'", "11.3 refuses protocol 'tls' at define "
                                     "(qemuValidateDomainChrSourceDef); 9.0 defines it"),
    "shmem-invalid-address": _v(START_TIME, "only 'pci' addresses", "qemuBuildShmemCommandLine"),
    "shmem-invalid-size": _v(VERSION, "power of 2", _SHMEM_SIZE),
    "shmem-small-size": _v(VERSION, "power of 2", _SHMEM_SIZE),
    **{f"firmware-auto-{name}": _v(VERSION, "firmware that is compatible", _FIRMWARE) for name in (
        "bios", "efi", "efi-enrolled-keys", "efi-loader-secure", "efi-no-enrolled-keys", "efi-no-secboot",
        "efi-nvram-path", "efi-secboot", "efi-smm-off", "efi-stateless")},
    # libvirt only refuses
    "disk-device-removable": _v(VERSION, "removable is only valid", "'removable' on a SCSI disk from 9.6.0 "
                                "(virDomainDiskDefValidate); 9.0 allows it on USB only"),
    "disk-sata-product": _v(VERSION, "vendor and product", "'product' on an IDE/SATA disk after 9.0 "
                            "(qemuValidateDomainDeviceDefDiskFrontend); 9.0 allows it on SCSI only"),
    "net-usb": _v(VERSION, "new PCI bus", "a usb-net NIC gets a USB address from 10.3.0; 9.0 looks for a PCI slot"),
    "net-user-passt": _v(VERSION, "'passt'", "the host's 9.0 refuses <backend type='passt'> at parse; 11.3 builds it"),
    "vhost-user-fs-readonly": _v(VERSION, "read-only mode", "a read-only virtiofs from 11.0.0; 9.0 refuses it"),
}


@dataclass
class ParityOutcome:
    """One corpus domain: libvirt's ``virsh define --validate`` (schema, parse and validation, no start) and the
    suite's render-free pipeline (schema, parse, rules, argv) on the same QEMU's capabilities."""

    case: str
    libvirt: str  # its refusal, '' when it defines the domain
    suite: str  # the suite's refusal, '' when it builds an argv
    expected: list[str]  # what libvirt 11.3's own tests expect of it (argv, xml2xml, error)
    # when only the suite refuses: libvirt's pretend start (``virsh domxml-to-native``: the start's domain
    # preparation and command line, no host set-up), its refusal or '' when it builds; None when not asked
    start: str | None = None

    @property
    def bucket(self) -> str:
        return {(False, False): "both accept", (True, True): "both refuse", (True, False): "libvirt only refuses",
                (False, True): "suite only refuses"}[(bool(self.libvirt), bool(self.suite))]

    @property
    def disagrees(self) -> bool:
        return bool(self.libvirt) != bool(self.suite)

    @property
    def explained(self) -> ParityVerdict | None:
        """The verdict of PARITY_EXPLAINED on this disagreement, if it still fits the refusal; else None."""
        why = PARITY_EXPLAINED.get(self.case)
        return why if self.disagrees and why is not None and why.refusal in (self.libvirt or self.suite) else None


def pretend_start(daemon: PrivateLibvirtd, xml_file: Path) -> str | None:
    """libvirt's refusal of a domain when starting it, without starting it: ``virsh domxml-to-native`` runs the
    start's domain preparation and command-line build (qemuProcessCreatePretendCmdPrepare/Build) with no disk,
    network or cgroup set-up; '' when it builds a command line. None for a domain with ``<interface
    type='hostdev'>``: libvirtd 9.0 crashes on it (a use-after-free in qemuConnectDomainXMLToNative). It is blind
    to interface checks: qemuConnectDomainXMLToNative makes every ``<interface>`` a plain type='ethernet' one."""
    if re.search(r"<interface\s[^>]*type=['\"]hostdev['\"]", xml_file.read_text()):
        return None
    done = daemon.virsh("domxml-to-native", "qemu-argv", str(xml_file), check=False)
    return libvirt_message(done.stderr) if done.returncode else ""


def corpus_parity(daemon: PrivateLibvirtd, caps: Capabilities, corpus: Path, *, arch: str = "x86_64",
                  say: Callable[[str], None] = lambda _m: None) -> list[ParityOutcome]:
    """Every input of libvirt 11.3's corpus for ``arch`` (its emulator the host's) defined under the private
    libvirtd and run through the suite: who refuses what. ``define`` stops before the start-time checks (host
    NUMA nodes, hugepages, firmware selection, QEMU refusing a device), so a domain only the suite refuses is
    also given to libvirt's pretend start (``pretend_start``). Each disagreement's verdict is in
    PARITY_EXPLAINED; ``parity_report`` counts the ones without."""
    from conformance.domain.parse import parse_domain
    from conformance.domain.schema import validate_schema
    from conformance.interrupt import STOP
    from conformance.pipeline import domain_argv

    index = json.loads((corpus / "index.json").read_text())
    emulator = f"/usr/bin/qemu-system-{arch}"
    out: list[ParityOutcome] = []
    scratch = daemon.root / "parity.xml"
    for case in index["cases"]:
        for var in case["variants"]:
            if STOP.is_set() or var["tree"] != "libvirt-11.3.0" or var["needs"]:
                continue
            expected = [o["kind"] for o in var["outputs"] if o["arch"] == arch]
            if not expected:
                continue
            source = corpus / var["input"]
            xml = re.sub(r"<emulator>[^<]*</emulator>", f"<emulator>{emulator}</emulator>", source.read_text())
            xml = re.sub(r"<name>[^<]*</name>", f"<name>{case['name']}</name>", xml, count=1)
            scratch.write_text(xml)
            done = daemon.virsh("define", "--validate", str(scratch), check=False)
            theirs = libvirt_message(done.stderr) if done.returncode else ""
            if not done.returncode:
                daemon.virsh("undefine", case["name"], "--nvram", check=False)
            try:
                validate_schema(xml, source=str(source))
                domain_argv(parse_domain(xml, source=str(source)), caps)
                ours = ""
            except ConformanceError as exc:
                ours = exc.message
            found = ParityOutcome(case["name"], theirs, ours, expected)
            if ours and not theirs:
                found.start = pretend_start(daemon, scratch)
            out.append(found)
    say(f"corpus parity ({arch}, {len(out)} domains): " + ", ".join(
        f"{sum(o.bucket == b for o in out)} {b}"
        for b in ("both accept", "both refuse", "libvirt only refuses", "suite only refuses")))
    return out


def parity_report(found: Sequence[ParityOutcome]) -> tuple[list[str], int]:
    """The disagreements, one line each with its verdict (kind and reason) or UNEXPLAINED, then the counts by
    kind; and how many are unexplained. An entry of PARITY_EXPLAINED whose domain now agrees is listed as stale
    (the suite or the host changed: drop it)."""
    lines, unexplained = [], 0
    kinds: dict[str, int] = {}
    for o in found:
        if not o.disagrees:
            continue
        why = o.explained
        kind, reason = (why.kind, why.reason) if why is not None else ("UNEXPLAINED", "")
        if why is None:
            unexplained += 1
        kinds[kind] = kinds.get(kind, 0) + 1
        start = "" if o.start is None else f"; libvirt's pretend start: {o.start[:120] or 'builds'}"
        lines.append(f"{o.bucket:20} {kind:12} {o.case} (11.3's tests: {'/'.join(sorted(set(o.expected)))}): "
                     f"{(o.libvirt or o.suite)[:150]}" + (f" -- {reason}" if reason else "") + start)
    seen = {o.case for o in found}
    stale = sorted(c for c in PARITY_EXPLAINED if c in seen and not any(o.case == c and o.disagrees for o in found))
    lines += [f"stale in PARITY_EXPLAINED (now agrees): {c}" for c in stale]
    total = sum(kinds.values())
    lines.append(f"{total} disagreements: {total - unexplained} explained ("
                 + ", ".join(f"{kinds[k]} {k}" for k in PARITY_KINDS if k in kinds)
                 + f"), {unexplained} unexplained")
    return lines, unexplained


def host_binaries() -> list[Path]:
    """The host's QEMU binaries the comparison runs on: x86_64, and aarch64 when installed."""
    return [Path(p) for arch in ("x86_64", "aarch64") if (p := shutil.which(f"qemu-system-{arch}"))]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m conformance.libvirt_oracle [-o DIR] [--cases GLOB...] [--qemu PATH...]``: the comparison,
    its headline last; exit 1 when a domain libvirt started differs from the suite's argv after the rules (and
    is not in KNOWN_DIFFERENCES), when the suite refuses a domain libvirt starts, or a boot fails."""
    import argparse

    from conformance.interrupt import exit_code, stop_on_signals

    parser = argparse.ArgumentParser(prog="python -m conformance.libvirt_oracle", description=main.__doc__)
    parser.add_argument("-o", "--output", type=Path, default=Path("reports/libvirt-oracle"))
    parser.add_argument("--cases", action="append", help="case name glob (repeatable; default every case)")
    parser.add_argument("--qemu", action="append", type=Path, help="QEMU binary (default the host's)")
    parser.add_argument("--boot", default=",".join(BOOT_CASES), help="cases booted under libvirt (comma list)")
    parser.add_argument("--corpus-parity", action="store_true",
                        help="instead: who refuses what of libvirt's x86_64 corpus (libvirt define vs the suite)")
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print(f"libvirt oracle: cannot run: missing {'; '.join(missing)}", file=sys.stderr)
        return 2
    if args.corpus_parity:
        return _corpus_parity_main(args.output.absolute())
    with stop_on_signals(lambda m: print(m, file=sys.stderr)):
        run = run_oracle(args.qemu or host_binaries(), args.output.absolute(), patterns=args.cases,
                         boot=[c for c in args.boot.split(",") if c], say=print)
        stopped = exit_code()
    if stopped:
        print(f"libvirt oracle: interrupted after {len(run.outcomes)} domains; the private libvirtd and its "
              "QEMUs are stopped", file=sys.stderr)
        print(run.summary())
        return stopped
    for line in run.lines():
        print(line)
    print(run.summary())
    unexplained = [o for o in run.outcomes if o.status == "differing" and o.case not in KNOWN_DIFFERENCES]
    for o in unexplained:
        print(f"not explained by a rule or KNOWN_DIFFERENCES: {o.case} [{o.arch}]", file=sys.stderr)
    return 1 if unexplained or run.count("suite-refused") or not all(b.ok for b in run.boots) else 0


def _corpus_parity_main(output: Path) -> int:
    from dataclasses import asdict

    from conformance.caps.probe import probe_binary
    from conformance.interrupt import stop_on_signals
    from conformance.paths import libvirt_corpus_dir
    from conformance.runner import make_target

    corpus = libvirt_corpus_dir()
    if not (corpus / "index.json").exists():
        print(f"libvirt oracle: no libvirt corpus at {corpus} (QEMU_CONFORMANCE_SHARED)", file=sys.stderr)
        return 2
    # with libvirt's TCG probe of the CPU too (the corpus's type='qemu' host-model domains)
    caps = make_target(Path("/usr/bin/qemu-system-x86_64"), lambda _m: None,
                       caps=probe_binary(Path("/usr/bin/qemu-system-x86_64"), tcg_host_cpu=True)).caps
    output.mkdir(parents=True, exist_ok=True)
    with stop_on_signals(lambda m: print(m, file=sys.stderr)), \
            private_libvirtd(output / "libvirtd-parity", keep=True) as daemon:
        found = corpus_parity(daemon, caps, corpus, say=print)
    (output / "corpus-parity.json").write_text(json.dumps(
        [asdict(o) | {"bucket": o.bucket, "verdict": o.explained and o.explained._asdict()}
         for o in found], indent=1) + "\n")
    lines, unexplained = parity_report(found)
    for line in lines:
        print(line)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
