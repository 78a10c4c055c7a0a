"""Relative paths are made absolute once, at the edge; paths in QEMU's comma syntax are escaped.

Each command runs from a temporary working folder with a relative ``-o`` and again with the
absolute form of the same folder: the verdicts (or the written file) must be the same. Before
the fix a relative ``-o`` reached QEMU (started in its VM folder) and libvirt's schema (which
rejects relative disk paths), and 43 of 44 boots of the README's command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conformance.argv.options import escape_opt_value, format_props, parse_props, split_opts
from conformance.cli import binary_arg, build_parser, caps_arg, path_arg
from conformance.live.adapt import adapt_for_live
from conformance.paths import absolute, cache_dir
from tests.helpers import CLI, code_under_test

HOSTILE = "we ird, =dir'\"ä"  # space, comma, '=', both quotes, non-ASCII




def cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**code_under_test(), **(env or {})})
    assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout + proc.stderr


def verdicts(results: Path) -> Counter[tuple[str, str, str, str]]:
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert records, f"{results} is empty"
    return Counter((r["case"], r["stage"], r["arch"], r["verdict"]) for r in records)


def _forms(tmp_path: Path) -> tuple[Path, Path]:
    """Two working folders, one per form, so the two runs cannot see each other's output."""
    rel, abs_ = tmp_path / "rel", tmp_path / "abs"
    rel.mkdir()
    abs_.mkdir()
    return rel, abs_


# --- the command line -----------------------------------------------------------------------

PATH_DESTS = {"output", "dest", "dir", "kernel", "modules", "files", "results", "domain", "binary", "qemu",
              "a", "b", "caps"}


def _actions(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _actions(sub, f"{prefix}{name} ")
        else:
            found.append((prefix.strip(), action))
    return found


def test_every_path_option_is_made_absolute() -> None:
    """Guard for new options: every path-like argument has a converter that makes it absolute."""
    missing = [f"{cmd} {a.dest}" for cmd, a in _actions(build_parser())
               if a.dest in PATH_DESTS and a.type not in (path_arg, binary_arg, caps_arg)]
    assert missing == []


def test_parsed_paths_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    parse = build_parser().parse_args
    assert parse(["run", "-o", "out"]).output == tmp_path / "out"
    assert parse(["run"]).output == tmp_path / "reports" / "run"  # the default too
    assert parse(["qualify"]).output == tmp_path / "reports" / "host"
    assert parse(["report", "a/results.jsonl"]).output == tmp_path / "reports" / "merged"
    assert parse(["report", "a/results.jsonl"]).results == [tmp_path / "a" / "results.jsonl"]
    args = parse(["guest", "build", "--kernel", "k/vmlinuz", "--modules", "../m"])
    assert (args.kernel, args.modules) == (tmp_path / "k" / "vmlinuz", tmp_path / ".." / "m")  # no resolve()
    assert parse(["builds", "fetch", "--dest", "b"]).dest == tmp_path / "b"
    assert parse(["argv", "d.xml", "--caps", "7.2:x86_64"]).domain == tmp_path / "d.xml"
    assert parse(["argv", "d.xml", "--caps", "7.2:x86_64"]).caps == "7.2:x86_64"
    assert parse(["caps", "diff", "x.xml", "4.2.0:x86_64"]).a == str(tmp_path / "x.xml")
    assert parse(["run", "--qemu", "./qemu", "--qemu", "/opt/q"]).qemu == [tmp_path / "qemu", Path("/opt/q")]


def test_bare_binary_name_is_looked_up_in_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "bin" / "qemu-system-toy"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)
    assert binary_arg("qemu-system-toy") == tool
    assert binary_arg("not-installed-anywhere") == tmp_path / "not-installed-anywhere"


def test_symlinked_folders_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    assert absolute("link/out") == tmp_path / "link" / "out"  # absolute(), not resolve()


def test_pytest_plugin_options_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.pytest_plugin import _binary_option, _path_option

    monkeypatch.chdir(tmp_path)
    assert _path_option("out") == str(tmp_path / "out")  # a str: xdist sends options to its workers
    assert _binary_option("./q") == str(tmp_path / "q")


# --- settings ---------------------------------------------------------------------------------

def test_path_settings_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.argv.cpu_map import find_cpu_map
    from conformance.argv.firmware import firmware_dirs
    from conformance.data import user_dirs
    from conformance.domain.schema import schema_dir
    from conformance.paths import builds_dir, shared_dir

    monkeypatch.chdir(tmp_path)
    for name, read in (("QEMU_CONFORMANCE_DATA", lambda: user_dirs()[0]), ("QEMU_CONFORMANCE_CACHE", cache_dir),
                       ("QEMU_CONFORMANCE_BUILDS", builds_dir), ("QEMU_CONFORMANCE_SHARED", shared_dir),
                       ("QEMU_CONFORMANCE_SCHEMA_DIR", schema_dir)):
        monkeypatch.setenv(name, "some/where")
        assert read() == tmp_path / "some" / "where", name
    monkeypatch.setenv("QEMU_CONFORMANCE_FIRMWARE_DIRS", "fw1::/abs/fw2")
    assert firmware_dirs() == (tmp_path / "fw1", Path("/abs/fw2"))
    (tmp_path / "map").mkdir()
    (tmp_path / "map" / "index.xml").write_text("<cpus/>")
    monkeypatch.setenv("QEMU_CONFORMANCE_CPU_MAP", "map")
    assert find_cpu_map() == tmp_path / "map"
    monkeypatch.delenv("QEMU_CONFORMANCE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignore a relative value
    assert cache_dir() == Path.home() / ".cache" / "qemu-conformance"


# --- QEMU's comma syntax ----------------------------------------------------------------------

def test_escape_and_parse_are_symmetric() -> None:
    assert escape_opt_value(f"/tmp/{HOSTILE}/x") == "/tmp/we ird,, =dir'\"ä/x"
    value = f"file,id=c0,path={escape_opt_value(f'/tmp/{HOSTILE}/c0.log')},append=on"
    assert list(split_opts(value)) == ["file", "id=c0", f"path=/tmp/{HOSTILE}/c0.log", "append=on"]
    props = {"driver": "file", "id": "c0", "path": f"/tmp/{HOSTILE}/c0.log", "x": "a,,b,"}
    assert parse_props(format_props(props, "comma")) == props
    assert format_props(parse_props(value), value) == value


def test_adapt_escapes_vm_folder_paths(tmp_path: Path) -> None:
    vm_dir = tmp_path / HOSTILE / "live" / "case"
    static = ["/usr/bin/qemu-system-x86_64", "-machine", "q35", "-accel", "tcg",
              "-chardev", "pty,id=charserial0",
              "-device", '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
              "-chardev", "socket,id=charchannel0,fd=1729,server=on,wait=off",
              "-vnc", f"unix:{escape_opt_value(vm_dir)}/vnc.sock,audiodev=audio1"]
    live = adapt_for_live(static, binary="/usr/bin/qemu-system-x86_64", accel="tcg", vm_dir=vm_dir,
                          boot_args=["-kernel", str(tmp_path / "K,1"), "-append", "console=ttyS0"])
    chardevs = [live.argv[i + 1] for i, a in enumerate(live.argv) if a == "-chardev"]
    assert parse_props(chardevs[0]) == {"driver": "file", "id": "charserial0", "path": str(vm_dir / "charserial0.log")}
    assert chardevs[1] == "socket,id=charchannel0,path=charchannel0.sock,server=on,wait=off"  # relative: 107 bytes
    assert live.argv[live.argv.index("-vnc") + 1] == "unix:vnc.sock,audiodev=audio1"
    assert live.argv[live.argv.index("-kernel") + 1] == str(tmp_path / "K,1")  # an argv item of its own
    assert live.console_log == vm_dir / "charserial0.log"
    no_serial = adapt_for_live(["/usr/bin/qemu-system-x86_64", "-machine", "q35"], binary="q", accel="tcg",
                               vm_dir=vm_dir, boot_args=[])
    added = no_serial.argv[no_serial.argv.index("-chardev") + 1]
    assert parse_props(added)["path"] == str(vm_dir / "console.log")


DOMAIN = """<domain type='qemu'>
  <name>hostile</name>
  <memory unit='KiB'>262144</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc-q35-4.1'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='DIR/vda.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='DIR/share'/>
      <target dir='share'/>
    </filesystem>
    <serial type='file'>
      <source path='DIR/serial.log'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='connect' path='DIR/channel.sock'/>
      <target type='virtio' name='org.qemu-conformance.0'/>
    </channel>
    <graphics type='vnc' socket='DIR/vnc.sock'/>
  </devices>
</domain>
"""


def test_static_argv_escapes_domain_paths() -> None:
    """Paths the domain names, in comma-syntax options (-drive, -fsdev, -chardev, -vnc), as libvirt escapes them."""
    from xml.sax.saxutils import escape

    from conformance.argv import build_argv
    from conformance.caps.store import resolve
    from conformance.domain.parse import parse_domain

    folder = f"/srv/{HOSTILE}"
    xml = DOMAIN.replace("DIR", escape(folder, {"'": "&apos;", '"': "&quot;"}))
    argv = build_argv(parse_domain(xml), resolve("4.1.0:x86_64"))  # before -blockdev: -drive file=...
    items = {opt: [] for opt in ("-drive", "-fsdev", "-chardev", "-vnc")}
    for i, opt in enumerate(argv):
        if opt in items:
            items[opt] += split_opts(argv[i + 1])
    assert f"file={folder}/vda.qcow2" in items["-drive"]
    assert f"path={folder}/share" in items["-fsdev"]
    assert {f"path={folder}/serial.log", f"path={folder}/channel.sock"} <= set(items["-chardev"])
    assert f"unix:{folder}/vnc.sock" in items["-vnc"]


# --- the commands, relative and absolute ------------------------------------------------------

@pytest.mark.live
def test_run_static_relative_and_absolute(tmp_path: Path, qemu_x86_64: Path) -> None:
    rel, abs_ = _forms(tmp_path)
    common = ["run", "--stages", "parse,argv", "--qemu", "qemu-system-x86_64", "--cases", "disk-*",
              "--cases", "serial-console", "--cases", "graphics-vnc-vga", "--cases", "teaming-q35"]
    cli(rel, *common, "-o", f"{HOSTILE}/out")
    cli(abs_, *common, "-o", str(abs_ / HOSTILE / "out"))
    assert verdicts(rel / HOSTILE / "out" / "results.jsonl") == verdicts(abs_ / HOSTILE / "out" / "results.jsonl")


@pytest.mark.live
def test_qualify_no_boot_relative_and_absolute(tmp_path: Path, qemu_x86_64: Path) -> None:
    rel, abs_ = _forms(tmp_path)
    out_rel = cli(rel, "qualify", "--no-boot", "--qemu", str(qemu_x86_64), "-o", "reports/host")
    out_abs = cli(abs_, "qualify", "--no-boot", "--qemu", str(qemu_x86_64), "-o", str(abs_ / "reports/host"))
    assert verdicts(rel / "reports/host/results.jsonl") == verdicts(abs_ / "reports/host/results.jsonl")
    assert (rel / "reports/host/report.html").is_file()
    assert out_rel.splitlines()[-1] == out_abs.splitlines()[-1] == "QUALIFIED"
    assert str(rel / "reports/host/results.jsonl") in out_rel  # printed absolute
    # the static migration prediction runs too: the host build with itself, every case it builds, no hazard
    predicted = [json.loads(line) for line in (rel / "reports/host/results.jsonl").read_text().splitlines()
                 if '"vmstate"' in line]
    predicted = [r for r in predicted if r["stage"] == "vmstate"]
    assert predicted and all(r["verdict"] in ("pass", "skip") for r in predicted), predicted[:3]
    passed = [r for r in predicted if r["verdict"] == "pass"]
    assert passed and all(r["details"]["same_build"] and r["details"]["machine"] for r in passed)
    assert all(set(r["details"]["devices"].values()) <= {"compatible"} for r in passed)
    assert "vmstate: " in out_rel and " predictions in " in out_rel


def test_report_relative_and_absolute(tmp_path: Path) -> None:
    results = tmp_path / "in" / "results.jsonl"
    results.parent.mkdir()
    results.write_text(json.dumps({"case": "q35-minimal", "stage": "argv", "arch": "x86_64", "verdict": "pass",
                                   "reason": "", "qemu": {"path": "/usr/bin/qemu-system-x86_64",
                                                          "version": "7.2.22", "package": "", "arch": "x86_64"}})
                       + "\n")
    cli(tmp_path, "report", "in/results.jsonl", "-o", f"{HOSTILE}/rel")
    cli(tmp_path, "report", str(results), "-o", str(tmp_path / HOSTILE / "abs"))

    def html(folder: str) -> str:
        text = (tmp_path / HOSTILE / folder / "report.html").read_text()
        return re.sub(r"Generated [^<]* UTC", "Generated", text)

    assert html("rel") == html("abs")


@pytest.mark.smoke
@pytest.mark.live
def test_probe_relative_and_absolute(tmp_path: Path, qemu_x86_64: Path) -> None:
    rel, abs_ = _forms(tmp_path)
    cli(rel, "probe", "qemu-system-x86_64", "-o", f"{HOSTILE}/caps.xml")
    cli(abs_, "probe", str(qemu_x86_64), "-o", str(abs_ / HOSTILE / "caps.xml"))

    def fixture(folder: Path) -> str:
        return re.sub(r' created="[^"]*"', "", (folder / HOSTILE / "caps.xml").read_text())

    assert fixture(rel) == fixture(abs_)
    assert f'binary="{qemu_x86_64}"' in fixture(rel)


def test_guest_build_with_relative_cache_setting(tmp_path: Path) -> None:
    """The cached guest, reached through a relative QEMU_CONFORMANCE_CACHE (a symlink to the real cache)."""
    real = cache_dir()
    if not any((real / "guest").glob("x86_64-*/guest.json")):
        pytest.skip(f"no cached x86_64 guest in {real} (run scripts/setup.sh)")
    (tmp_path / "cache").symlink_to(real)
    by_rel = cli(tmp_path, "guest", "build", env={"QEMU_CONFORMANCE_CACHE": "cache"})
    by_abs = cli(tmp_path, "guest", "build", env={"QEMU_CONFORMANCE_CACHE": str(real)})
    assert by_rel.strip().splitlines()[-1] == by_abs.strip().splitlines()[-1]
    assert "x86_64 guest" in by_rel
