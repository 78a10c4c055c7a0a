"""The ways a probe can fail (fake binaries, no QEMU), the QAPI schema index, recorded probe transcripts.
Real probes of the host's QEMU: tests/live/test_probe.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.caps.probe import PROBE_TIMEOUT, SchemaIndex, probe_binary
from conformance.errors import ProbeFailed
from tests.helpers import DATA
from tests.helpers.processes import processes_matching


def _fake(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(ProbeFailed, match="no such file"):
        probe_binary(tmp_path / "qemu-system-nothing")


def test_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "qemu"
    path.write_text("data")
    with pytest.raises(ProbeFailed, match="not executable"):
        probe_binary(path)


def test_not_qemu(tmp_path: Path) -> None:
    with pytest.raises(ProbeFailed, match="not a QEMU binary"):
        probe_binary(_fake(tmp_path, "true-like", "exit 0"))


def test_binary_dying_with_sigsegv(tmp_path: Path) -> None:
    fake = _fake(tmp_path, "segv", 'echo "about to crash" >&2; kill -SEGV $$')
    with pytest.raises(ProbeFailed, match="SIGSEGV") as info:
        probe_binary(fake)
    assert "about to crash" in str(info.value), "the stderr tail is part of the message"


def test_binary_that_never_answers_is_killed(tmp_path: Path) -> None:
    marker = f"{abs(hash(str(tmp_path))) % 10**8 + 10**8}"
    fake = _fake(tmp_path, "hang", f"exec sleep {marker}")
    started = time.monotonic()
    with pytest.raises(ProbeFailed, match="did not answer QMP"):
        probe_binary(fake, timeout=2.0)
    assert time.monotonic() - started < 2.0 + 5, "bounded by the timeout plus the stop sequence"
    assert processes_matching(f"sleep {marker}") == [], "no process may be left behind"


def test_cli_failure_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "probe", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_schema_queries() -> None:
    schema = [
        {"name": "device_add", "meta-type": "command", "arg-type": "0", "ret-type": "1",
         "features": ["json-cli-hotplug"]},
        {"name": "netdev_add", "meta-type": "command", "arg-type": "2", "ret-type": "1"},
        {"name": "2", "meta-type": "object", "members": [{"name": "type", "type": "3"}]},
        {"name": "3", "meta-type": "enum", "values": ["user", "dgram"]},
    ]
    index = SchemaIndex(schema)
    assert index.holds("device_add/$json-cli-hotplug")
    assert not index.holds("netdev_add/$json-cli-hotplug")
    assert index.holds("netdev_add/arg-type/type/^dgram")
    assert not index.holds("netdev_add/arg-type/type/^stream")
    assert not index.holds("object-add/arg-type/qom-type/^secret")
    assert PROBE_TIMEOUT <= 10


def test_option_members_from_the_schema() -> None:
    """The QAPI unions behind -netdev/-blockdev/-chardev: the union's own members and those every branch has
    under "", nested objects as "outer.inner", alternates as their choices, chardev-add's "data" unwrapped."""
    schema = [
        {"name": "netdev_add", "meta-type": "command", "arg-type": "N", "ret-type": "0"},
        {"name": "N", "meta-type": "object", "tag": "type", "members": [{"name": "id", "type": "str"},
                                                                         {"name": "type", "type": "E"}],
         "variants": [{"case": "user", "type": "U"}, {"case": "tap", "type": "T"}]},
        {"name": "U", "meta-type": "object", "members": [{"name": "net", "type": "str"},
                                                         {"name": "guestfwd", "type": "[S]"}]},
        {"name": "T", "meta-type": "object", "members": [{"name": "vhost", "type": "bool"}]},
        {"name": "chardev-add", "meta-type": "command", "arg-type": "C", "ret-type": "0"},
        {"name": "C", "meta-type": "object", "members": [{"name": "id", "type": "str"},
                                                         {"name": "backend", "type": "B"}]},
        {"name": "B", "meta-type": "object", "tag": "type", "members": [{"name": "type", "type": "E"}],
         "variants": [{"case": "socket", "type": "W1"}, {"case": "pty", "type": "W2"}]},
        {"name": "W1", "meta-type": "object", "members": [{"name": "data", "type": "SO"}]},
        {"name": "W2", "meta-type": "object", "members": [{"name": "data", "type": "PT"}]},
        {"name": "SO", "meta-type": "object", "members": [{"name": "logfile", "type": "str"},
                                                          {"name": "addr", "type": "A"},
                                                          {"name": "file", "type": "R"}]},
        {"name": "PT", "meta-type": "object", "members": [{"name": "logfile", "type": "str"}]},
        {"name": "A", "meta-type": "object", "members": [{"name": "path", "type": "str"}]},
        {"name": "R", "meta-type": "alternate", "members": [{"type": "A"}, {"type": "str"}]},
        {"name": "[S]", "meta-type": "array", "element-type": "S"},
        {"name": "S", "meta-type": "object", "members": [{"name": "str", "type": "str"}]},
        {"name": "E", "meta-type": "enum", "values": ["user", "tap"]},
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
        {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
    ]
    assert SchemaIndex(schema).option_members() == {
        "netdev": {"": {"id": "string", "type": "string"}, "user": {"net": "string", "guestfwd": "array"},
                   "tap": {"vhost": "boolean"}},
        "chardev": {"": {"logfile": "string"}, "pty": {},
                    "socket": {"addr": "object", "addr.path": "string", "file": "object|string"}},
    }  # no blockdev-add in this schema: nothing recorded for -blockdev


def test_host_cpu_from_recorded_replies() -> None:
    from conformance.caps.probe import host_cpu_from_replies, host_cpu_queries

    assert host_cpu_queries("x86_64", kvm=True)[0] == {"type": "static", "model": {"name": "host"}}
    assert host_cpu_queries("x86_64", kvm=False)[1]["model"] == {"name": "max", "props": {"migratable": False}}
    assert host_cpu_queries("aarch64", kvm=False) == [{"type": "full", "model": {"name": "max"}}]
    migratable = {"model": {"name": "base", "props": {"aes": True, "invtsc": False, "family": 23,
                                                      "vendor": "AuthenticAMD", "pmu": False}}}
    everything = {"model": {"name": "base", "props": {"aes": True, "invtsc": True, "family": 23,
                                                      "vendor": "AuthenticAMD", "pmu": False}}}
    host = host_cpu_from_replies([migratable, everything], "kvm")
    assert host is not None and host.migratability
    by_name = {p.name: p for p in host.properties}
    assert (by_name["aes"].value, by_name["aes"].migratable) == ("true", True)
    assert (by_name["invtsc"].value, by_name["invtsc"].migratable) == ("true", False)  # libvirt: migratable='no'
    assert (by_name["pmu"].value, by_name["pmu"].migratable) == ("false", None)
    assert (by_name["family"].type, by_name["family"].value) == ("number", "23")
    assert host_cpu_from_replies([RuntimeError("no")], "kvm") is None
    single = host_cpu_from_replies([migratable], "tcg")
    assert single is not None and not single.migratability


# --- recorded transcripts replayed through the pure part (libvirt's .replies habit) ---------------------------


@pytest.mark.parametrize(("transcript", "fixture"), [
    ("qemu-7.2.22-x86_64.qmp.jsonl.gz", "qemu-7.2.22-x86_64.xml"),
    ("qemu-10.0.2-aarch64.qmp.jsonl.gz", "qemu-10.0.2-aarch64.xml"),
])
def test_replayed_transcript_gives_the_stored_fixture(transcript: str, fixture: str, capsdata: Path) -> None:
    """A probe's QMP transcript (tests/data/probe, kept by probe_binary(transcript=)) replayed through
    capabilities_from_replies gives the stored fixture's facts: probe changes are tested without a QEMU.
    (The fixture keeps the host CPU of the host it was first probed on; the transcript has today's.)"""
    import gzip

    from conformance.caps.probe import capabilities_from_replies, replies_from_transcript
    from conformance.caps.store import load

    lines = gzip.decompress((DATA / "probe" / transcript).read_bytes()).decode().splitlines()
    stored = load(capsdata / fixture)
    replayed = capabilities_from_replies(replies_from_transcript(lines), binary=stored.provenance.binary or "",
                                         accel=stored.provenance.accel or "tcg")
    assert (replayed.version, replayed.arch, replayed.package) == (stored.version, stored.arch, stored.package)
    for field in ("qom_types", "commands", "events", "schema", "migration_capabilities", "accelerators",
                  "type_properties", "machines", "cpu_models", "flags", "option_members"):
        assert getattr(replayed, field) == getattr(stored, field), field
    assert replayed.host_cpus and replayed.host_cpus[0].accel == stored.provenance.accel


def test_replay_keeps_failed_commands_as_failures() -> None:
    from conformance.caps.probe import RecordedFailure, replies_from_transcript

    lines = ['{"t": 1, "execute": {"execute": "query-sev-capabilities"}}',
             '{"t": 2, "execute": {"execute": "device-list-properties", "arguments": {"typename": "e1000"}}}',
             '{"t": 3, "error": {"execute": "query-sev-capabilities", "class": "GenericError", "desc": "no SEV"}}',
             '{"t": 4, "return": [{"name": "mac", "type": "str"}]}']
    replies = replies_from_transcript(lines)
    assert isinstance(replies["query-sev-capabilities"], RecordedFailure)
    assert replies["properties"] == {"e1000": [{"name": "mac", "type": "str"}]}
