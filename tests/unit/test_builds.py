"""Tests for conformance/builds.py.

No network and no QEMU: recipe data, the text of the files written, the wrapper run against a
fake binary (pid, arguments, inherited fds, the module-folder bind). The real prepared builds are
run in tests/live/test_builds_real.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conformance import builds
from conformance.builds import KNOWN_BUILDS, BuildSpec, Package, Source
from conformance.errors import QemuBuildError

HOST_MODULES = "/usr/lib/x86_64-linux-gnu/qemu"


def _namespace_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    return subprocess.run([unshare, "--mount", "--", "true"], capture_output=True, check=False).returncode == 0


# --- recipe data ------------------------------------------------------------------------------


def test_known_builds_are_data_for_10_0_and_5_2() -> None:
    assert set(KNOWN_BUILDS) >= {"10.0", "5.2"}
    for name, spec in KNOWN_BUILDS.items():
        assert spec.name == name
        assert spec.version_prefix == name + "."
        assert "x86_64" in spec.arches
        names = [p.name for p in spec.packages]
        assert len(names) == len(set(names)), f"{name}: a package is listed twice"
        assert {"qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios"} <= set(names)
        if "aarch64" in spec.arches:
            assert "qemu-system-arm" in names
        assert spec.binary("x86_64") == "usr/bin/qemu-system-x86_64"
        assert spec.host_module_dir == HOST_MODULES


def test_10_0_takes_qemu_from_bookworm_backports_and_needs_no_extra_libraries() -> None:
    spec = KNOWN_BUILDS["10.0"]
    suites = {s.suite for s in spec.sources}
    assert "bookworm-backports" in suites
    qemu = [p for p in spec.packages if p.name.startswith("qemu-system-")]
    assert qemu and all(p.release == "bookworm-backports" for p in qemu)
    assert spec.library_dirs == ()


def test_5_2_pins_bullseye_qemu_and_brings_bullseye_libraries() -> None:
    spec = KNOWN_BUILDS["5.2"]
    assert {s.suite for s in spec.sources} == {"bullseye", "bullseye-security"}
    qemu = [p for p in spec.packages if p.name.startswith("qemu-system-")]
    assert {p.version for p in qemu} == {"1:5.2+dfsg-11+deb11u5"}
    names = {p.name for p in spec.packages}
    assert {"liburing1", "libvirglrenderer1", "libxenmisc4.14", "libxenstore3.0", "libyajl2"} <= names
    assert "usr/lib/x86_64-linux-gnu" in spec.library_dirs


@pytest.mark.parametrize(("package", "pinned", "expected"), [
    (Package("seabios"), True, "seabios"),
    (Package("seabios", release="bookworm-backports"), True, "seabios/bookworm-backports"),
    (Package("qemu-system-x86", version="1:5.2+dfsg-11+deb11u5"), True, "qemu-system-x86=1:5.2+dfsg-11+deb11u5"),
    (Package("qemu-system-x86", version="1:5.2+dfsg-11+deb11u5"), False, "qemu-system-x86"),
    (Package("qemu-system-x86", release="bullseye", version="1:5.2"), False, "qemu-system-x86/bullseye"),
])
def test_package_apt_spec(package: Package, pinned: bool, expected: str) -> None:
    assert package.apt_spec(pinned=pinned) == expected


# --- private apt state ------------------------------------------------------------------------


def test_sources_list_holds_only_the_recipe_sources_signed_by_the_debian_keyring() -> None:
    spec = KNOWN_BUILDS["5.2"]
    lines = [line for line in builds.sources_list_text(spec).splitlines() if not line.startswith("#")]
    assert lines == [
        f"deb [signed-by={builds.DEBIAN_KEYRING}] http://deb.debian.org/debian bullseye main",
        f"deb [signed-by={builds.DEBIAN_KEYRING}] http://deb.debian.org/debian-security bullseye-security main",
    ]


def test_apt_config_points_all_state_into_the_private_folder(tmp_path: Path) -> None:
    apt_dir = tmp_path / "apt"
    text = builds.apt_config_text(apt_dir)
    dir_lines = [line for line in text.splitlines() if line.startswith("Dir::")]
    assert len(dir_lines) >= 8
    for line in dir_lines:
        assert f'"{apt_dir}/' in line, line
    for hook in ("APT::Update::Post-Invoke-Success", "DPkg::Post-Invoke", "DPkg::Pre-Install-Pkgs"):
        assert f"#clear {hook};" in text


@pytest.mark.skipif(shutil.which("apt-config") is None, reason="apt-config not installed")
def test_apt_reads_the_private_config_after_the_hosts(tmp_path: Path) -> None:
    apt_dir = tmp_path / "apt"
    apt_dir.mkdir()
    (apt_dir / "apt.conf").write_text(builds.apt_config_text(apt_dir))
    dump = subprocess.run(["apt-config", "-c", str(apt_dir / "apt.conf"), "dump"],
                          capture_output=True, text=True, check=True).stdout
    assert f'Dir::State::status "{apt_dir}/status";' in dump
    assert f'Dir::Etc::sourcelist "{apt_dir}/sources.list";' in dump
    assert f'Dir::State::lists "{apt_dir}/lists";' in dump
    # the host's update hooks (packagekit, appstream) are gone
    assert not re.search(r'^APT::Update::Post-Invoke-Success:: ".+"', dump, re.MULTILINE)


def test_apt_config_rejects_a_folder_apt_cannot_quote(tmp_path: Path) -> None:
    with pytest.raises(QemuBuildError, match="quotes"):
        builds.apt_config_text(tmp_path / 'a"b')


def test_download_falls_back_when_a_pinned_version_left_the_archive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_apt(apt_dir: Path, args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        if len(calls) == 1:
            return subprocess.CompletedProcess(args, 100, "", "E: Version '1:5.2+dfsg-11+deb11u5' for "
                                               "'qemu-system-x86' was not found\n")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(builds, "_apt", fake_apt)
    spec = BuildSpec(name="t", title="t", sources=(), arches=("x86_64",), version_prefix="5.2.",
                     packages=(Package("qemu-system-x86", version="1:5.2+dfsg-11+deb11u5"), Package("seabios")))
    logged: list[str] = []
    builds._apt_download(spec, tmp_path / "apt", tmp_path / "debs", logged.append, "fetch")
    assert calls[0] == ["download", "qemu-system-x86=1:5.2+dfsg-11+deb11u5", "seabios"]
    assert calls[1] == ["download", "qemu-system-x86", "seabios"]
    assert any("has left the archive" in line for line in logged)


def test_download_error_is_one_line_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_apt(apt_dir: Path, args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 100, "", "E: Unable to locate package nosuch\n")

    monkeypatch.setattr(builds, "_apt", fake_apt)
    spec = BuildSpec(name="t", title="t", sources=(), arches=("x86_64",), version_prefix="1.",
                     packages=(Package("nosuch"),))
    with pytest.raises(QemuBuildError) as info:
        builds._apt_download(spec, tmp_path / "apt", tmp_path / "debs", print, "`qemu-conformance builds fetch t`")
    text = str(info.value)
    assert "\n" not in text
    assert "Unable to locate package nosuch" in text
    assert "builds fetch t" in text


# --- the wrapper ------------------------------------------------------------------------------


def _fake_root(tmp_path: Path, spec: BuildSpec, arch: str = "x86_64") -> Path:
    """A root whose qemu-system-<arch> reports its pid, args, LD_LIBRARY_PATH and the module
    folder's content, and writes to the inherited fd $QC_FD."""
    root = tmp_path / "fake root"  # a space, to test the quoting
    for sub in (*spec.library_dirs[:1], *spec.firmware_dirs, spec.module_dir):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / spec.module_dir / "build-module.so").write_text("")
    binary = root / spec.binary(arch)
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text(f"#!{sys.executable}\n" + textwrap.dedent("""\
        import os, sys
        modules = os.environ["QC_MODULES"]
        lines = [f"pid={os.getpid()}", "ld=" + os.environ.get("LD_LIBRARY_PATH", ""),
                 "modules=" + " ".join(sorted(os.listdir(modules) if os.path.isdir(modules) else []))]
        lines += [f"arg={arg}" for arg in sys.argv[1:]]
        with open(os.environ["QC_OUT"], "w") as out:
            out.write("\\n".join(lines) + "\\n")
        if os.environ.get("QC_FD"):
            os.write(int(os.environ["QC_FD"]), b"hello through fd\\n")
        """))
    binary.chmod(0o755)
    return root


def _write_wrapper(tmp_path: Path, spec: BuildSpec, root: Path, host_modules: Path) -> Path:
    """The real wrapper text for ``root``, with this host's unshare and mount, as tmp_path/qemu-system-x86_64."""
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(builds.wrapper_script(spec, root, "x86_64", host_module_dir=str(host_modules),
                                             unshare=shutil.which("unshare") or "/usr/bin/unshare",
                                             mount=shutil.which("mount") or "/bin/mount"))
    wrapper.chmod(0o755)
    return wrapper


def _run_wrapper(tmp_path: Path, spec: BuildSpec, root: Path, host_modules: Path,
                 pass_fd: int | None = None) -> tuple[int, dict[str, list[str]]]:
    wrapper = _write_wrapper(tmp_path, spec, root, host_modules)
    out = tmp_path / "out.txt"
    env = {"PATH": os.environ["PATH"], "QC_OUT": str(out), "QC_MODULES": str(host_modules)}
    if pass_fd is not None:
        env["QC_FD"] = str(pass_fd)
    proc = subprocess.Popen([str(wrapper), "-machine", "q35", "-name", "two words"], env=env,
                            pass_fds=(pass_fd,) if pass_fd is not None else (),
                            stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    report: dict[str, list[str]] = {}
    for line in out.read_text().splitlines():
        key, _, value = line.partition("=")
        report.setdefault(key, []).append(value)
    return proc.pid, report


def test_wrapper_text_is_valid_sh_and_always_execs(tmp_path: Path) -> None:
    for spec in KNOWN_BUILDS.values():
        root = _fake_root(tmp_path / spec.name, spec)
        text = builds.wrapper_script(spec, root, "x86_64", package_version="1:9.9")
        script = tmp_path / f"{spec.name}.sh"
        script.write_text(text)
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
        assert text.startswith("#!/bin/sh\n")
        assert "(Debian 1:9.9)" in text
        # no program started before QEMU but unshare and the bind's mount; every start is an exec
        assert "--mount -- true" not in text and "env " not in text
        code = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert sum(line.startswith("exec ") for line in code) == 2  # unshare (then QEMU inside), or QEMU
        assert "exec /usr/bin/unshare --mount -- /bin/sh -c" in text
        assert ("LD_LIBRARY_PATH=" in text) == bool(spec.library_dirs)


def _strace_works() -> bool:
    strace = shutil.which("strace")
    return strace is not None and subprocess.run([strace, "-o", "/dev/null", "true"], capture_output=True,
                                                 check=False).returncode == 0


@pytest.mark.skipif(not _namespace_works() or not _strace_works(), reason="needs root (a mount namespace) and strace")
@pytest.mark.parametrize("name", list(KNOWN_BUILDS))
def test_wrapper_starts_only_unshare_mount_and_qemu(tmp_path: Path, name: str) -> None:
    """Each program the wrapper starts is paid once per QEMU (1,300 in a cold static prediction): the real
    script under /bin/sh, every execve and fork counted by strace."""
    spec = KNOWN_BUILDS[name]
    root = _fake_root(tmp_path, spec)
    host_modules = tmp_path / "host-modules"
    host_modules.mkdir()
    wrapper = _write_wrapper(tmp_path, spec, root, host_modules)
    trace = tmp_path / "trace"
    env = {"PATH": os.environ["PATH"], "QC_OUT": str(tmp_path / "out"), "QC_MODULES": str(host_modules),
           "LD_LIBRARY_PATH": "/outer"}
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", str(trace),
                           "/bin/sh", str(wrapper), "-name", "x"], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    programs = [Path(m.group(1)).name for m in re.finditer(r'execve\("([^"]+)"', trace.read_text())
                if "= 0" in m.string[m.end():m.string.index("\n", m.end())]]
    assert programs == ["sh", "unshare", "sh", "mount", "qemu-system-x86_64"], programs
    report = {k: v for k, _, v in (line.partition("=") for line in (tmp_path / "out").read_text().splitlines())}
    assert report["modules"] == "build-module.so"
    # the build's libraries for QEMU alone, ahead of the caller's
    assert report["ld"] == (f"{root}/{spec.library_dirs[0]}:/outer" if spec.library_dirs else "/outer")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_wrapper_run_as_root_without_cap_sys_admin_says_it_needs_root(tmp_path: Path) -> None:
    """Root in a container that dropped CAP_SYS_ADMIN cannot make the namespace either: the builtin check
    reads the effective capabilities, not the uid."""
    spec = KNOWN_BUILDS["5.2"]
    root = _fake_root(tmp_path, spec)
    host_modules = tmp_path / "host-modules"
    host_modules.mkdir()
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(builds.wrapper_script(spec, root, "x86_64", host_module_dir=str(host_modules)))
    wrapper.chmod(0o755)
    proc = subprocess.run(["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", str(wrapper),
                           "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 126, proc.stderr
    assert "QEMU 5.2 needs a private mount namespace" in proc.stderr and "run it as root" in proc.stderr


def test_wrapper_without_host_modules_execs_the_binary_with_firmware_dirs(tmp_path: Path) -> None:
    spec = KNOWN_BUILDS["5.2"]
    root = _fake_root(tmp_path, spec)
    host_modules = tmp_path / "no-such-module-folder"
    pid, report = _run_wrapper(tmp_path, spec, root, host_modules)
    assert report["pid"] == [str(pid)]
    assert report["arg"] == ["-L", f"{root}/usr/share/qemu", "-L", f"{root}/usr/share/seabios",
                             "-L", f"{root}/usr/lib/ipxe/qemu", "-machine", "q35", "-name", "two words"]
    assert report["ld"][0].split(":")[0] == f"{root}/usr/lib/x86_64-linux-gnu"


def test_wrapper_leaves_out_missing_firmware_and_library_dirs(tmp_path: Path) -> None:
    spec = KNOWN_BUILDS["10.0"]
    root = _fake_root(tmp_path, spec)
    shutil.rmtree(root / "usr/lib/ipxe/qemu")
    text = builds.wrapper_script(spec, root, "x86_64")
    assert '-L "$root/usr/share/seabios"' in text
    assert "ipxe" not in text.split("set --", 1)[1]
    assert "LD_LIBRARY_PATH" not in text


@pytest.mark.skipif(not _namespace_works(), reason="no private mount namespace here (needs root)")
def test_wrapper_binds_the_build_modules_over_the_host_folder_and_keeps_pid_and_fds(tmp_path: Path) -> None:
    spec = KNOWN_BUILDS["10.0"]
    root = _fake_root(tmp_path, spec)
    host_modules = tmp_path / "host-modules"
    host_modules.mkdir()
    (host_modules / "host-module.so").write_text("")
    ours, theirs = socket.socketpair()
    try:
        pid, report = _run_wrapper(tmp_path, spec, root, host_modules, pass_fd=theirs.fileno())
        ours.settimeout(5)
        assert ours.recv(100) == b"hello through fd\n"
    finally:
        ours.close()
        theirs.close()
    assert report["pid"] == [str(pid)]
    assert report["modules"] == ["build-module.so"]  # the build's folder, not the host's
    assert report["arg"][-4:] == ["-machine", "q35", "-name", "two words"]
    # the bind lived in the private namespace only
    assert sorted(p.name for p in host_modules.iterdir()) == ["host-module.so"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_wrapper_run_without_root_says_it_needs_root() -> None:
    spec = KNOWN_BUILDS["10.0"]
    with tempfile.TemporaryDirectory() as temp:  # not under pytest's 0700 folder: nobody must enter it
        base = Path(temp)
        base.chmod(0o755)
        root = _fake_root(base, spec)
        host_modules = base / "host-modules"
        host_modules.mkdir()
        wrapper = base / "qemu-system-x86_64"
        wrapper.write_text(builds.wrapper_script(spec, root, "x86_64", host_module_dir=str(host_modules),
                                                 unshare=shutil.which("unshare") or "/usr/bin/unshare"))
        wrapper.chmod(0o755)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(wrapper),
                               "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 126
    assert "QEMU 10.0 needs a private mount namespace" in proc.stderr
    assert "run it as root" in proc.stderr


# --- stamp, find, list, CLI -------------------------------------------------------------------


def _fake_prepared(base: Path, name: str) -> Path:
    spec = KNOWN_BUILDS[name]
    folder = builds.build_folder(name, base).resolve()
    (folder / "bin").mkdir(parents=True)
    for arch in spec.arches:
        wrapper = folder / "bin" / f"qemu-system-{arch}"
        wrapper.write_text("#!/bin/sh\n")
        wrapper.chmod(0o755)
    (folder / builds.BUILD_JSON_NAME).write_text(json.dumps({
        "name": name, "version": name + ".7", "version_line": f"QEMU emulator version {name}.7",
        "package_version": "1:" + name, "arches": list(spec.arches)}))
    (folder / builds.STAMP_NAME).write_text(builds.fingerprint(spec, folder) + "\n")
    return folder


def test_fingerprint_follows_recipe_folder_and_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = KNOWN_BUILDS["10.0"]
    first = builds.fingerprint(spec, tmp_path / "a")
    assert first == builds.fingerprint(spec, tmp_path / "a")
    assert first != builds.fingerprint(spec, tmp_path / "b")
    changed = BuildSpec(**{**spec.__dict__, "packages": (*spec.packages, Package("extra"))})
    assert first != builds.fingerprint(changed, tmp_path / "a")
    monkeypatch.setattr(builds, "WRAPPER_FORMAT", builds.WRAPPER_FORMAT + 1)
    assert first != builds.fingerprint(spec, tmp_path / "a")


def test_find_qemu_needs_the_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMU_CONFORMANCE_BUILDS", str(tmp_path))
    assert builds.find_qemu("10.0") is None
    folder = _fake_prepared(tmp_path, "10.0")
    assert builds.find_qemu("10.0") == builds.build_folder("10.0") / "bin" / "qemu-system-x86_64"
    assert builds.find_qemu("10.0", "aarch64") == builds.build_folder("10.0") / "bin" / "qemu-system-aarch64"
    assert builds.find_qemu("10.0", "riscv64") is None
    assert builds.find_qemu("5.2") is None
    (folder / builds.STAMP_NAME).unlink()
    assert builds.find_qemu("10.0") is None


def test_list_builds_reports_prepared_builds_and_stale_recipes(tmp_path: Path) -> None:
    assert builds.list_builds(tmp_path / "nothing-here") == []
    folder = _fake_prepared(tmp_path, "5.2")
    (tmp_path / "qemu-half").mkdir()  # no build.json, no stamp: not listed
    listed = builds.list_builds(tmp_path)
    assert [(b["name"], b["current"], b["path"]) for b in listed] == [("5.2", True, str(folder))]
    assert builds.is_prepared("5.2", base=tmp_path)
    (folder / builds.STAMP_NAME).write_text("an older recipe\n")
    assert builds.list_builds(tmp_path)[0]["current"] is False
    assert not builds.is_prepared("5.2", base=tmp_path)


def test_older_wrappers_are_rewritten_in_place_without_a_download(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A build prepared by a format of REWRAP_FORMATS differs only in its wrappers: ``builds fetch``
    (setup.sh) rewrites them, checks them and stamps the build current, with nothing downloaded."""
    assert builds.REWRAP_FORMATS and builds.WRAPPER_FORMAT not in builds.REWRAP_FORMATS
    folder = _fake_prepared(tmp_path, "5.2")
    (folder / "root").mkdir()
    (folder / builds.STAMP_NAME).write_text(builds.fingerprint(KNOWN_BUILDS["5.2"], folder,
                                                               builds.REWRAP_FORMATS[-1]) + "\n")
    listed = builds.list_builds(tmp_path)
    assert [(b["current"], b["rewrap"]) for b in listed] == [(False, True)]
    checked: list[str] = []
    monkeypatch.setattr(builds, "qemu_version_line", lambda w: checked.append(w.name) or "QEMU emulator version 5.2.7")
    monkeypatch.setattr(builds, "qmp_module_check", lambda w: checked.append(f"modules {w.name}") or 1)
    monkeypatch.setattr(builds, "_prepare", lambda *a: pytest.fail("a full prepare (download) for new wrappers"))
    lines: list[str] = []
    assert builds.prepare_build("5.2", dest=tmp_path, log=lines.append) == folder
    assert builds.is_prepared("5.2", base=tmp_path)
    assert checked == ["qemu-system-x86_64", "modules qemu-system-x86_64",
                       "qemu-system-aarch64", "modules qemu-system-aarch64"]
    for arch in KNOWN_BUILDS["5.2"].arches:
        text = (folder / "bin" / f"qemu-system-{arch}").read_text()
        assert "CapEff" in text and f"root={folder / 'root'}" in text and "(Debian 1:5.2)" in text
        assert os.access(folder / "bin" / f"qemu-system-{arch}", os.X_OK)
    assert "nothing downloaded" in lines[-1]
    # a stamp of no known format (another recipe) is not rewrapped: a full prepare
    (folder / builds.STAMP_NAME).write_text("an older recipe\n")
    assert builds.list_builds(tmp_path)[0]["rewrap"] is False
    with pytest.raises(pytest.fail.Exception, match="a full prepare"):
        builds.prepare_build("5.2", dest=tmp_path, log=lines.append)


def test_rewrapped_build_whose_version_changed_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_prepared(tmp_path, "10.0")
    (folder / "root").mkdir()
    (folder / builds.STAMP_NAME).write_text(builds.fingerprint(KNOWN_BUILDS["10.0"], folder,
                                                               builds.REWRAP_FORMATS[-1]) + "\n")
    monkeypatch.setattr(builds, "qemu_version_line", lambda w: "QEMU emulator version 10.1.0")
    with pytest.raises(QemuBuildError, match=r"says 'QEMU emulator version 10.1.0'.*\n?.*builds fetch 10.0"):
        builds.prepare_build("10.0", dest=tmp_path, log=lambda line: None)
    assert not builds.is_prepared("10.0", base=tmp_path)


def test_prepare_build_returns_at_once_when_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_prepared(tmp_path, "10.0")

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepared again")

    monkeypatch.setattr(builds, "_prepare", must_not_run)
    started = time.monotonic()
    assert builds.prepare_build("10.0", dest=tmp_path, log=must_not_run) == folder
    assert time.monotonic() - started < 0.5


def test_prepare_build_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(QemuBuildError, match=r"unknown QEMU build '9\.9'.*known builds: 10\.0, 5\.2"):
        builds.prepare_build("9.9", dest=tmp_path)
    assert not (tmp_path / "qemu-9.9").exists()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get not installed")
def test_prepare_build_reports_an_unreachable_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BuildSpec(name="bogus", title="unreachable", sources=(Source("http://127.0.0.1:9/debian", "bookworm"),),
                     packages=(Package("qemu-system-x86"),), arches=("x86_64",), version_prefix="1.",
                     module_dir="nonexistent/qemu-modules")  # no namespace check: runs as any user
    monkeypatch.setitem(KNOWN_BUILDS, "bogus", spec)
    logged: list[str] = []
    with pytest.raises(QemuBuildError) as info:
        builds.prepare_build("bogus", dest=tmp_path, log=logged.append)
    text = str(info.value)
    assert "apt-get update failed" in text and "127.0.0.1" in text
    assert "`qemu-conformance builds fetch bogus`" in text
    assert "\n" not in text
    assert builds.find_qemu("bogus", base=tmp_path) is None
    assert not (tmp_path / "qemu-bogus" / builds.STAMP_NAME).exists()
    assert logged and "apt-get update" in logged[0]


def test_cli_list_names_the_fetch_command_for_missing_builds(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _fake_prepared(tmp_path, "5.2")
    rc = builds.cli_builds(argparse.Namespace(action="list", names=[], dest=tmp_path))
    out = capsys.readouterr().out
    assert rc == 0
    assert "run `qemu-conformance builds fetch 10.0`" in out
    line_52 = next(line for line in out.splitlines() if line.startswith("5.2"))
    assert "5.2.7" in line_52 and "x86_64,aarch64" in line_52 and "not prepared" not in line_52


def test_cli_fetch_refuses_unknown_names_before_fetching(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = builds.cli_builds(argparse.Namespace(action="fetch", names=["10.0", "4.0"], dest=tmp_path))
    assert rc == 2
    assert "unknown QEMU build '4.0'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_fetch_of_prepared_builds_prints_their_versions(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _fake_prepared(tmp_path, "10.0")
    _fake_prepared(tmp_path, "5.2")
    rc = builds.cli_builds(argparse.Namespace(action="fetch", names=[], dest=tmp_path))
    out = capsys.readouterr().out
    assert rc == 0
    assert "QEMU 10.0: QEMU emulator version 10.0.7" in out
    assert "QEMU 5.2: QEMU emulator version 5.2.7" in out


# --- libvirt's CPU map ---------------------------------------------------------------------------


def test_cpu_map_recipe_is_trixie_libvirt_common() -> None:
    spec = builds.CPU_MAP
    assert {s.suite for s in spec.sources} == {"trixie"}
    assert [p.name for p in spec.packages] == ["libvirt-common"]  # trixie moved cpu_map out of libvirt0
    assert spec.member == "usr/share/libvirt/cpu_map"
    assert "trixie" in builds.sources_list_text(spec)  # type: ignore[arg-type]


def test_fetched_cpu_map_is_found_and_prepare_returns_at_once(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert builds.fetched_cpu_map(tmp_path) is None
    folder = builds.cpu_map_folder(tmp_path)
    (folder / "cpu_map").mkdir(parents=True)
    (folder / "cpu_map" / "index.xml").write_text("<cpus/>")
    (folder / builds.CPU_MAP_JSON_NAME).write_text(json.dumps({"version": "11.3.0-3+deb13u3"}))
    assert builds.fetched_cpu_map(tmp_path) == (folder / "cpu_map", "11.3.0-3+deb13u3")
    monkeypatch.setattr(builds, "_apt_update", lambda *a: pytest.fail("no apt for a fetched map"))
    assert builds.prepare_cpu_map(dest=tmp_path, log=lambda _: None) == folder / "cpu_map"


def test_cpu_map_fetch_reports_an_unreachable_archive(tmp_path: Path) -> None:
    spec = builds.CpuMapSpec(name="bogus", title="unreachable map",
                             sources=(Source("http://127.0.0.1:9/debian", "trixie"),),
                             packages=(Package("libvirt-common"),))
    with pytest.raises(QemuBuildError) as info:
        builds.prepare_cpu_map(dest=tmp_path, spec=spec, log=lambda _: None)
    text = str(info.value)
    assert "cannot prepare unreachable map: apt-get update failed" in text
    assert "qemu-conformance builds cpu-map" in text and "\n" not in text
    assert builds.fetched_cpu_map(tmp_path, spec) is None


def test_newest_cpu_map_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.argv import cpu_map

    monkeypatch.delenv(cpu_map.ENV_CPU_MAP, raising=False)
    monkeypatch.setenv("QEMU_CONFORMANCE_CACHE", str(tmp_path))
    folder = builds.cpu_map_folder(tmp_path)
    (folder / "cpu_map").mkdir(parents=True)
    (folder / "cpu_map" / "index.xml").write_text("<cpus/>")
    (folder / builds.CPU_MAP_JSON_NAME).write_text(json.dumps({"version": "11.3.0-3"}))
    system = tmp_path / "system"
    system.mkdir()
    (system / "index.xml").write_text("<cpus/>")
    monkeypatch.setattr(cpu_map, "SYSTEM_CPU_MAP", system)
    monkeypatch.setattr(cpu_map, "_system_map_version", lambda: (9, 0, 0))
    assert cpu_map.find_cpu_map() == folder / "cpu_map"
    monkeypatch.setattr(cpu_map, "_system_map_version", lambda: (12, 0, 0))
    assert cpu_map.find_cpu_map() == system
