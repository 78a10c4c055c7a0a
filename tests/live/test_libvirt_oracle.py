"""The second oracle: the host's real libvirt (Debian 12: 9.0) in a private libvirtd.

- every case the host's libvirt starts gives the suite's argv after the written rules, or a difference
  listed in KNOWN_DIFFERENCES with its reason (a new one fails);
- validation parity: libvirt accepts what the suite accepts and refuses what it refuses, with its message;
- a few cases boot under libvirt and the guest's report matches the argv QEMU received;
- the private libvirtd leaves nothing behind, also when its caller is interrupted or killed.

Needs libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients, the libvirt-qemu user and root
(`nox -s libvirt` installs nothing: .ci/run does); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.cases import load_catalogue, plan
from conformance.domain.parse import parse_domain
from conformance.domain.semantics import validate_domain
from conformance.errors import ConformanceError
from conformance.libvirt_oracle import (
    KNOWN_DIFFERENCES,
    PrivateLibvirtd,
    boot_case,
    compare_case,
    corpus_parity,
    libvirt_message,
    missing_requirements,
    parity_report,
)
from conformance.live.boot import Target
from tests.helpers import ROOT, code_under_test

pytestmark = [pytest.mark.live, pytest.mark.skipif(bool(missing_requirements()), reason=(
    "no private libvirtd here: missing " + "; ".join(missing_requirements())))]

@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateLibvirtd]:
    root = tmp_path_factory.mktemp("libvirtd")
    with PrivateLibvirtd(root, keep=True) as running:
        yield running


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder: the cases' UNIX sockets (VNC, channels) live in their VM folders, and a socket path
    longer than 107 bytes is refused (pytest's tmp_path can be longer)."""
    folder = Path(tempfile.mkdtemp(prefix="lvo-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _started_under(daemon: PrivateLibvirtd, xml: Path, name: str) -> str:
    """'' when libvirt defines the domain (validation), else its message."""
    done = daemon.virsh("define", str(xml), check=False)
    if done.returncode:
        return libvirt_message(done.stderr)
    daemon.virsh("undefine", name, check=False)
    return ""


# --- the comparison ---------------------------------------------------------------------------------------


def _comparable(target: Target) -> list[str]:
    catalogue = load_catalogue()
    return [c.name for c in catalogue.cases.values()
            if "argv" in c.stages and (p := plan(c, target.caps)).run and not p.expect_error]


@pytest.mark.smoke
def test_a_case_is_identical_after_the_rules(daemon: PrivateLibvirtd, x86_target: Target, tmp_path: Path) -> None:
    """The cheapest whole loop: q35-minimal under libvirt 9.0, compared with the suite's argv."""
    outcome = compare_case(daemon, load_catalogue().get("q35-minimal"), x86_target, load_catalogue(), tmp_path)
    assert outcome.status == "identical", (outcome.detail, outcome.libvirt_argv)
    assert "management-options" in outcome.rules  # libvirt's own -name, -S, monitor: dropped by a rule
    assert outcome.libvirt_argv[0] == str(x86_target.binary)


def test_every_case_libvirt_starts_is_identical_after_the_rules(daemon: PrivateLibvirtd, x86_target: Target,
                                                                short_tmp: Path) -> None:
    catalogue = load_catalogue()
    differing, refused = {}, {}
    for name in _comparable(x86_target):
        outcome = compare_case(daemon, catalogue.get(name), x86_target, catalogue, short_tmp)
        if outcome.status == "differing":
            differing[name] = outcome.detail
        elif outcome.status == "refused":
            refused[name] = outcome.detail
        elif outcome.status == "both-refused":  # parity: the same refusal, in libvirt's words
            theirs, ours = outcome.detail.removeprefix("libvirt: ").split("; suite: ", 1)
            assert theirs in ours, outcome.detail
        else:
            assert outcome.status == "identical", (name, outcome.status, outcome.detail)
    assert set(differing) <= set(KNOWN_DIFFERENCES), {k: v for k, v in differing.items()
                                                       if k not in KNOWN_DIFFERENCES}
    # what libvirt refuses here is the host (no PCI passthrough) or libvirt 9.0 itself (it names the DC-390
    # SCSI controller dc-390, which QEMU refuses; 11.3 and the suite write dc390)
    unexplained = {k: v for k, v in refused.items()
                   if "host doesn't support passthrough" not in v and "'dc-390' is not a valid" not in v}
    assert not unexplained, unexplained


# --- validation parity --------------------------------------------------------------------------------------

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='KiB'>262144</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>{emulator}</emulator>
{devices}
  </devices>
</domain>
"""
NET = "<interface type='user'><mac address='52:54:00:00:00:0{n}'/><model type='{model}'/>{inner}</interface>"
VF = ("<interface type='hostdev' managed='yes'><mac address='52:54:00:00:00:01'/><source><address type='pci' "
      "domain='0x0000' bus='0x03' slot='0x07' function='0x1'/></source>{inner}</interface>")

PARITY = {  # name -> devices; the four the suite refused before issue 20 first
    "alias-without-prefix": NET.format(n=1, model="virtio", inner="<alias name='mynet'/>"),
    "alias-with-bad-characters": NET.format(n=1, model="virtio", inner="<alias name='ua-my.net!'/>"),
    "persistent-without-alias": NET.format(n=1, model="virtio", inner="<teaming type='persistent'/>"),
    "transient-names-missing-alias": NET.format(n=1, model="virtio", inner="<alias name='ua-net0'/>"
                                                "<teaming type='persistent'/>")
    + VF.format(inner="<teaming type='transient' persistent='ua-ghost'/>"),
    "duplicate-alias": NET.format(n=1, model="virtio", inner="<alias name='ua-x'/>")
    + NET.format(n=2, model="virtio", inner="<alias name='ua-x'/>"),
    "persistent-not-virtio": NET.format(n=1, model="e1000", inner="<alias name='ua-net0'/>"
                                        "<teaming type='persistent'/>"),
    "transient-not-hostdev": NET.format(n=1, model="virtio", inner="<alias name='ua-net0'/>"
                                        "<teaming type='persistent'/>")
    + NET.format(n=2, model="virtio", inner="<teaming type='transient' persistent='ua-net0'/>"),
    "transient-without-persistent": NET.format(n=1, model="virtio", inner="<alias name='ua-net0'/>"
                                               "<teaming type='persistent'/>")
    + VF.format(inner="<teaming type='transient'/>"),
    "secondary-bochs": "<video><model type='virtio' heads='1'/></video><video><model type='bochs' heads='1'/></video>",
}


@pytest.mark.smoke
@pytest.mark.parametrize("name", list(PARITY))
def test_suite_refuses_exactly_what_libvirt_refuses(daemon: PrivateLibvirtd, name: str, tmp_path: Path) -> None:
    xml = tmp_path / f"{name}.xml"
    xml.write_text(DOMAIN.format(name=name, emulator="/usr/bin/qemu-system-x86_64", devices=PARITY[name]))
    theirs = _started_under(daemon, xml, name)
    try:
        validate_domain(parse_domain(xml.read_text(), source=str(xml)))
        ours = ""
    except ConformanceError as exc:
        ours = exc.message
    assert bool(ours) == bool(theirs), f"libvirt: {theirs or 'accepts'}; suite: {ours or 'accepts'}"
    assert theirs in ours  # the same message, libvirt's words


# storage sources and lifecycle actions, defined without the schema (libvirt's parser and validation) and, when
# libvirt defines them, through its pretend start (virsh domxml-to-native): the suite's argv stage must agree
DISK = ("<disk type='{type}' device='{device}'><driver name='qemu' type='{fmt}'/>{source}"
        "<target dev='{dev}' bus='{bus}'/></disk>")
STORAGE_PARITY = {  # name -> (devices, lifecycle elements, what libvirt says: '' when it builds the domain)
    # the parser reads these options for HTTP(S)/FTP(S) sources only, <snapshot>/<config> are RBD's: ignored on NBD
    "nbd-with-http-options": (DISK.format(
        type="network", device="disk", fmt="raw", dev="vda", bus="virtio",
        source="<source protocol='nbd' name='e' query='a=b'><host name='h'/><cookies><cookie name='c'>v</cookie>"
               "</cookies><ssl verify='no'/><readahead size='65536'/><timeout seconds='10'/><snapshot name='s'/>"
               "<config file='/c'/></source>"), "", ""),
    "iscsi-lun-reservations": (DISK.format(
        type="network", device="lun", fmt="raw", dev="sda", bus="scsi",
        source="<source protocol='iscsi' name='iqn.2013-07.com.example:t/1'><host name='h'/><reservations "
               "managed='no'><source type='unix' path='/run/pr.sock' mode='client'/></reservations></source>")
        + "<controller type='scsi' index='0' model='virtio-scsi'/>", "", ""),
    "qcow-encryption": (DISK.format(
        type="file", device="disk", fmt="qcow2", dev="vda", bus="virtio",
        source="<source file='/var/lib/x.qcow2'><encryption format='qcow'><secret type='passphrase' "
               "uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/></encryption></source>"), "",
        "old qcow/qcow2 encryption is not supported"),
    "http-tls": (DISK.format(type="network", device="disk", fmt="raw", dev="vda", bus="virtio",
                             source="<source protocol='http' name='d.img' tls='yes'><host name='h'/></source>"), "",
                 "TLS transport is not supported for disk protocol 'http'"),
    "nbd-auth": (DISK.format(type="network", device="disk", fmt="raw", dev="vda", bus="virtio",
                             source="<source protocol='nbd' name='e'><host name='h'/><auth username='u'><secret "
                                    "type='iscsi' usage='x'/></auth></source>"), "",
                 "authentication is not supported for protocol 'nbd'"),
    "lun-over-nbd": (DISK.format(type="network", device="lun", fmt="raw", dev="sda", bus="scsi",
                                 source="<source protocol='nbd' name='e'><host name='h'/></source>")
                     + "<controller type='scsi' index='0' model='virtio-scsi'/>", "",
                     "disk device='lun' is not supported for protocol='nbd'"),
    "lun-qcow2": (DISK.format(type="block", device="lun", fmt="qcow2", dev="sda", bus="scsi",
                              source="<source dev='/dev/sdb'/>")
                  + "<controller type='scsi' index='0' model='virtio-scsi'/>", "",
                  "disk device 'lun' must use 'raw' format"),
    "reboot-rename-restart": ("", "<on_reboot>rename-restart</on_reboot>",
                              "qemu driver doesn't support the 'rename-restart' action"),
    "poweroff-preserve": ("", "<on_poweroff>preserve</on_poweroff>",
                          "qemu driver doesn't support the 'preserve' action"),
}


@pytest.fixture(scope="module")
def host_caps():  # the host's QEMU, probed once
    from conformance.caps.probe import probe_binary

    return probe_binary("/usr/bin/qemu-system-x86_64")


@pytest.mark.parametrize("name", list(STORAGE_PARITY))
def test_storage_and_lifecycle_refusals_as_libvirt(daemon: PrivateLibvirtd, host_caps, name: str,
                                                    tmp_path: Path) -> None:
    from conformance.libvirt_oracle import pretend_start
    from conformance.pipeline import domain_argv

    devices, lifecycle, want = STORAGE_PARITY[name]
    xml = tmp_path / f"{name}.xml"
    xml.write_text(DOMAIN.format(name=name, emulator="/usr/bin/qemu-system-x86_64", devices=devices)
                   .replace("</os>", f"</os>{lifecycle}"))
    done = daemon.virsh("define", str(xml), check=False)
    theirs = libvirt_message(done.stderr) if done.returncode else ""
    if not done.returncode:
        daemon.virsh("undefine", name, check=False)
        theirs = pretend_start(daemon, xml) or ""
    try:
        domain_argv(parse_domain(xml.read_text(), source=str(xml)), host_caps)
        ours = ""
    except ConformanceError as exc:
        ours = exc.message
    assert want in theirs and bool(want) == bool(theirs), f"libvirt: {theirs or 'accepts'}"
    assert want in ours and bool(want) == bool(ours), f"suite: {ours or 'accepts'}; libvirt: {theirs or 'accepts'}"


def test_libvirt_drops_the_aliases_the_suite_drops(daemon: PrivateLibvirtd, tmp_path: Path) -> None:
    for name in ("alias-without-prefix", "alias-with-bad-characters"):
        xml = tmp_path / f"{name}.xml"
        xml.write_text(DOMAIN.format(name=name, emulator="/usr/bin/qemu-system-x86_64", devices=PARITY[name]))
        daemon.virsh("define", str(xml))
        try:
            kept = "<alias" in daemon.virsh("dumpxml", "--inactive", name).stdout
        finally:
            daemon.virsh("undefine", name, check=False)
        assert not kept and parse_domain(xml.read_text()).devices.interfaces[0].alias is None


# --- boots under libvirt --------------------------------------------------------------------------------------


def test_a_case_boots_under_libvirt_and_the_guest_reports_its_devices(daemon: PrivateLibvirtd, x86_target: Target,
                                                                      tmp_path: Path) -> None:
    if x86_target.guest is None:
        pytest.skip(f"no test guest: {x86_target.guest_problem}")
    catalogue = load_catalogue()
    booted = boot_case(daemon, catalogue.get("serial-console"), x86_target, catalogue, tmp_path)
    assert booted.ok, booted.detail
    assert booted.checked >= 3


# --- nothing left behind ----------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from conformance.libvirt_oracle import PrivateLibvirtd
root = Path(sys.argv[1])
daemon = PrivateLibvirtd(root, keep=True).start()
daemon.create(Path(sys.argv[2]), "held", paused=True)
print(daemon._proc.pid, flush=True)
try:
    time.sleep(600)
finally:
    daemon.stop()
"""


def _namespace_of(unshare_pid: int) -> str:
    child = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()[0]
    return os.readlink(f"/proc/{child}/ns/pid_for_children")


def _in_namespace(ns: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(f"{entry}/ns/pid") == ns:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="SIGINT"),  # Ctrl-C: also the smoke test below
                                 pytest.param(signal.SIGKILL, id="SIGKILL", marks=pytest.mark.smoke)])
def test_nothing_outlives_its_caller(sig: signal.Signals, tmp_path: Path) -> None:
    """A caller interrupted (Ctrl-C: an orderly stop) or killed (SIGKILL: the namespace dies with it) leaves
    no libvirtd, virtlogd or QEMU."""
    xml = tmp_path / "held.xml"
    xml.write_text(DOMAIN.format(name="held", emulator="/usr/bin/qemu-system-x86_64", devices=""))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "root"), str(xml)],
                            stdout=subprocess.PIPE, text=True, env=code_under_test(), cwd=ROOT)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip().isdigit(), "the holder did not start its libvirtd"
        ns = _namespace_of(int(line))
        inside = _in_namespace(ns)
        assert len(inside) >= 4, inside  # init, virtlogd, libvirtd, QEMU
        proc.send_signal(sig)
        proc.wait(30)
        end = time.monotonic() + 10
        while _in_namespace(ns) and time.monotonic() < end:
            time.sleep(0.1)
        assert _in_namespace(ns) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def _unshare_of(root: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[0] == b"unshare" and str(root).encode() in cmd:
                return int(entry.name)
    return None


@pytest.mark.smoke
def test_ctrl_c_stops_the_comparison_and_exits_130(short_tmp: Path) -> None:
    """python -m conformance.libvirt_oracle under Ctrl-C (conformance/interrupt.py): it stops between two
    domains, stops the private libvirtd, prints what it had and exits 130."""
    out = short_tmp / "out"
    proc = subprocess.Popen([sys.executable, "-m", "conformance.libvirt_oracle", "-o", str(out), "--boot", "",
                             "--qemu", "/usr/bin/qemu-system-x86_64"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=code_under_test(), cwd=ROOT)
    try:
        end = time.monotonic() + 60
        while (unshare := _unshare_of(out / "libvirtd")) is None or not (out / "libvirtd" / "run" / "qemu").is_dir():
            assert proc.poll() is None and time.monotonic() < end, "the comparison did not start its libvirtd"
            time.sleep(0.2)
        ns = _namespace_of(unshare)
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, text[-2000:]
        assert time.monotonic() - began < 20, text[-2000:]
        assert "interrupted after" in text
        assert _in_namespace(ns) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_corpus_parity_sorts_each_domain_into_its_bucket(daemon: PrivateLibvirtd, x86_target: Target,
                                                         tmp_path: Path) -> None:
    """--corpus-parity on a corpus of four: one both accept, one both refuse, one libvirt 9.0 refuses (the
    passt backend, added after 9.0) while the suite (11.3) builds it, and one 9.0 defines and refuses only when
    starting (a 3 MiB shmem: its pretend start says so) while 11.3 and the suite refuse it at once, which
    PARITY_EXPLAINED explains under the corpus case's name."""
    domains = {"fine": NET.format(n=1, model="virtio", inner=""),
               "dup": PARITY["duplicate-alias"],
               "passt": NET.format(n=1, model="virtio", inner="<backend type='passt'/>"),
               "shmem-invalid-size": "<shmem name='s'><model type='ivshmem-plain'/><size unit='M'>3</size></shmem>"}
    cases = []
    for name, devices in domains.items():
        (tmp_path / f"{name}.xml").write_text(DOMAIN.format(name=name, emulator="/usr/bin/x", devices=devices))
        cases.append({"name": name, "variants": [{"tree": "libvirt-11.3.0", "needs": [], "input": f"{name}.xml",
                                                  "outputs": [{"arch": "x86_64", "kind": "argv"}]}]})
    (tmp_path / "index.json").write_text(json.dumps({"cases": cases}))
    outcomes = {o.case: o for o in corpus_parity(daemon, x86_target.caps, tmp_path)}
    assert {c: o.bucket for c, o in outcomes.items()} == {
        "fine": "both accept", "dup": "both refuse", "passt": "libvirt only refuses",
        "shmem-invalid-size": "suite only refuses"}
    shmem = outcomes["shmem-invalid-size"]
    assert "power of two" in (shmem.start or "") and shmem.explained is not None
    assert outcomes["fine"].start is None and outcomes["passt"].start is None
    lines, unexplained = parity_report(list(outcomes.values()))
    assert unexplained == 1 and lines[-1].endswith("1 unexplained")  # "passt" is no corpus case
