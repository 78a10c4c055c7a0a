"""Extra real QEMU builds beside the host's: 10.0 (bookworm-backports) and 5.2 (bullseye).

``prepare_build("10.0")`` fetches Debian's own packages with apt-get and unpacks them
under ``builds_dir()/qemu-10.0`` (setting QEMU_CONFORMANCE_BUILDS, see paths.py):

    qemu-10.0/
      apt/            private apt state: sources.list, apt.conf, lists, cache, an empty
                      dpkg status. The host's sources, pins, dpkg database and installed
                      packages are neither read for selection nor changed.
      root/           the packages, ``dpkg -x``-ed (nothing is installed)
      bin/            qemu-system-x86_64, qemu-system-aarch64: wrappers to run
      build.json      name, version reported by --version, packages and versions, arches
      prepared.stamp  written last; a later call with the same recipe returns at once

Why wrappers. Debian's QEMU looks for its modules in /usr/lib/x86_64-linux-gnu/qemu,
where the host's QEMU (7.2 here) keeps its own; an extra build that does not ship a
module (the GUI and spice ones live in packages not fetched here) loads the host's and
aborts: "Only modules from the same build can be loaded" (10.0), or warns and loses
types (5.2). QEMU_MODULE_DIR does not stop the fallback. So the wrapper runs the build's
binary in a private mount namespace (``unshare --mount``, root only) with the build's own
module folder bound over that path, puts the build's extra libraries (5.2 needs bullseye's
liburing1, Xen 4.14 and virglrenderer) on LD_LIBRARY_PATH for that binary only, and adds
``-L`` for the build's firmware folders ahead of the compiled-in /usr/share/qemu,
/usr/share/seabios and /usr/lib/ipxe/qemu. Every step execs (sh -> unshare -> sh -> qemu;
only ``mount --bind`` is a child), so the wrapper's pid is QEMU's, inherited file descriptors
(``-chardev socket,fd=N``) reach QEMU, and a PR_SET_PDEATHSIG set by the parent before exec
survives. Whether the namespace can be made is checked with shell builtins (CAP_SYS_ADMIN in
/proc/self/status): a cold static prediction starts 1,300 QEMUs, and each program the wrapper
starts is paid 1,300 times. When the host has no QEMU module folder there is nothing to hide
and no namespace is made.

What the builds lack: modules from packages not fetched (qemu-system-gui,
qemu-system-modules-*, qemu-block-extra), so no GTK/SDL/OpenGL/spice and no curl, iSCSI,
RBD or Gluster block drivers. Enough for -display none guests and probing.

The recipes are data (KNOWN_BUILDS); code does not branch on a build's name.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conformance.errors import QemuBuildError
from conformance.paths import builds_dir, cache_dir

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"

STAMP_NAME = "prepared.stamp"
BUILD_JSON_NAME = "build.json"
# Bump when the folder layout or the wrapper text changes: prepared builds are redone.
WRAPPER_FORMAT = 3
# Older formats whose folders differ from this one's only in the wrappers' text: a build prepared by one of
# them gets new wrappers in place (``builds fetch``, which setup.sh runs: no download). 2 -> 3: the root check
# is made with shell builtins (no ``unshare -- true`` before each QEMU), LD_LIBRARY_PATH without ``env``.
REWRAP_FORMATS = (2,)

APT_TIMEOUT = 900.0  # seconds for one apt-get run (update or download)
QEMU_TIMEOUT = 30.0  # seconds for one self-check run of a wrapper

# stderr of a QEMU that picked up another build's modules
MODULE_TROUBLE = re.compile(r"only modules from the same build|failed to (open|initialize) module",
                            re.IGNORECASE)
_VERSION_LINE = re.compile(r"QEMU emulator version (\d+\.\d+\.\d+)")
_APT_VERSION_MISSING = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


@dataclass(frozen=True)
class Source:
    """One apt source: ``deb [signed-by=KEYRING] URI SUITE COMPONENTS``."""

    uri: str
    suite: str
    components: tuple[str, ...] = ("main",)

    def line(self, keyring: str = DEBIAN_KEYRING) -> str:
        return f"deb [signed-by={keyring}] {self.uri} {self.suite} {' '.join(self.components)}"


@dataclass(frozen=True)
class Package:
    """One package to download.

    ``release`` takes that suite's version (``name/release``); ``version`` asks for an
    exact one (``name=version``). A pinned version that has left the archive (Debian keeps
    only the newest per suite) is replaced by the newest the sources offer, with a log
    line; build.json records what was really fetched.
    """

    name: str
    release: str | None = None
    version: str | None = None

    def apt_spec(self, *, pinned: bool = True) -> str:
        if pinned and self.version:
            return f"{self.name}={self.version}"
        if self.release:
            return f"{self.name}/{self.release}"
        return self.name


@dataclass(frozen=True)
class BuildSpec:
    """How to get one extra QEMU build. Paths are relative to the unpacked root."""

    name: str
    title: str
    sources: tuple[Source, ...]
    packages: tuple[Package, ...]
    arches: tuple[str, ...]  # binaries qemu-system-<arch> the packages provide
    version_prefix: str  # what ``--version`` must report, e.g. "10.0."
    library_dirs: tuple[str, ...] = ()  # on LD_LIBRARY_PATH for the binary only
    firmware_dirs: tuple[str, ...] = ("usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu")
    module_dir: str = "usr/lib/x86_64-linux-gnu/qemu"  # also the host path it is bound over
    keyring: str = DEBIAN_KEYRING

    def binary(self, arch: str) -> str:
        return f"usr/bin/qemu-system-{arch}"

    @property
    def host_module_dir(self) -> str:
        return "/" + self.module_dir

    @property
    def label(self) -> str:
        return f"QEMU {self.name}"


_BPO = "bookworm-backports"
_V52 = "1:5.2+dfsg-11+deb11u5"  # newest bullseye(-security) 5.2 when this was written

KNOWN_BUILDS: dict[str, BuildSpec] = {
    "10.0": BuildSpec(
        name="10.0",
        title="QEMU 10.0 from Debian bookworm-backports",
        sources=(Source(DEBIAN_MIRROR, "bookworm"), Source(DEBIAN_MIRROR, _BPO)),
        packages=(
            Package("qemu-system-x86", release=_BPO),
            Package("qemu-system-arm", release=_BPO),
            Package("qemu-system-common", release=_BPO),
            Package("qemu-system-data", release=_BPO),
            Package("seabios", release=_BPO),
            Package("ipxe-qemu", release="bookworm"),  # NIC option ROMs (efi-virtio.rom, ...)
        ),
        arches=("x86_64", "aarch64"),
        version_prefix="10.0.",
    ),
    "5.2": BuildSpec(
        name="5.2",
        title="QEMU 5.2 from Debian bullseye",
        sources=(Source(DEBIAN_MIRROR, "bullseye"), Source(DEBIAN_SECURITY_MIRROR, "bullseye-security")),
        packages=(
            Package("qemu-system-x86", version=_V52),
            Package("qemu-system-arm", version=_V52),
            Package("qemu-system-common", version=_V52),
            Package("qemu-system-data", version=_V52),
            Package("seabios"),
            Package("ipxe-qemu"),
            # bullseye libraries bookworm lacks (or a bookworm host may not have installed)
            Package("liburing1"),
            Package("libvirglrenderer1"),
            Package("libxencall1"),
            Package("libxendevicemodel1"),
            Package("libxenevtchn1"),
            Package("libxenforeignmemory1"),
            Package("libxengnttab1"),
            Package("libxenhypfs1"),
            Package("libxenmisc4.14"),
            Package("libxenstore3.0"),
            Package("libxentoolcore1"),
            Package("libxentoollog1"),
            Package("libyajl2"),
        ),
        arches=("x86_64", "aarch64"),
        version_prefix="5.2.",
        library_dirs=("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"),
    ),
}


# --- where things are -----------------------------------------------------------------------


def build_folder(name: str, base: Path | None = None) -> Path:
    """``<base>/qemu-<name>``; base defaults to builds_dir()."""
    return Path(base if base is not None else builds_dir()) / f"qemu-{name}"


def find_qemu(name: str, arch: str = "x86_64", *, base: Path | None = None) -> Path | None:
    """The wrapper for build ``name`` and ``arch`` if that build is prepared, else None."""
    folder = build_folder(name, base)
    if not (folder / STAMP_NAME).is_file():
        return None
    wrapper = folder / "bin" / f"qemu-system-{arch}"
    return wrapper if wrapper.is_file() and os.access(wrapper, os.X_OK) else None


def list_builds(base: Path | None = None) -> list[dict[str, Any]]:
    """The prepared builds: each build.json plus ``path`` and ``current`` (recipe unchanged)."""
    base_dir = Path(base if base is not None else builds_dir())
    found: list[dict[str, Any]] = []
    if not base_dir.is_dir():
        return found
    for folder in sorted(base_dir.glob("qemu-*")):
        stamp = folder / STAMP_NAME
        try:
            info = json.loads((folder / BUILD_JSON_NAME).read_text())
            stamp_text = stamp.read_text().strip()
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict):
            continue
        spec = KNOWN_BUILDS.get(str(info.get("name")))
        info["path"] = str(folder)
        info["current"] = spec is not None and stamp_text == fingerprint(spec, folder.resolve())
        info["rewrap"] = spec is not None and not info["current"] and _old_wrappers(spec, folder.resolve())
        found.append(info)
    return found


def is_prepared(name: str, *, base: Path | None = None) -> bool:
    """True when ``name`` is prepared with the current recipe (prepare_build would return at once)."""
    spec = KNOWN_BUILDS.get(name)
    return spec is not None and _is_current(spec, build_folder(name, base).resolve())


# --- text of the files we write ---------------------------------------------------------------


def fingerprint(spec: BuildSpec, folder: Path, wrapper_format: int | None = None) -> str:
    """Identifies a prepared build: the recipe, where it lives, the wrapper format (default: the current)."""
    data = {"spec": asdict(spec), "folder": str(folder),
            "format": WRAPPER_FORMAT if wrapper_format is None else wrapper_format}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def sources_list_text(spec: BuildSpec | CpuMapSpec) -> str:
    lines = [f"# private sources for the {spec.title} build (qemu-conformance)"]
    lines += [source.line(spec.keyring) for source in spec.sources]
    return "\n".join(lines) + "\n"


def apt_config_text(apt_dir: Path) -> str:
    """apt.conf given with ``-c``: read after the host's apt.conf.d (whose network settings
    still apply), it points every list, cache and state path into ``apt_dir`` and drops the
    host's update/dpkg hooks, so apt-get touches nothing outside ``apt_dir``."""

    def q(path: Path) -> str:
        text = str(path)
        if '"' in text or "\n" in text:
            raise QemuBuildError(f"cannot use build folder {text!r}: apt.conf paths cannot hold quotes",
                                 hint="choose another --dest")
        return f'"{text}"'

    return "\n".join([
        "// private apt state for a qemu-conformance build; nothing here is installed",
        f"Dir::Etc::SourceList {q(apt_dir / 'sources.list')};",
        f"Dir::Etc::SourceParts {q(apt_dir / 'sources.list.d')};",
        f"Dir::Etc::Preferences {q(apt_dir / 'preferences')};",
        f"Dir::Etc::PreferencesParts {q(apt_dir / 'preferences.d')};",
        f"Dir::State {q(apt_dir / 'state')};",
        f"Dir::State::Lists {q(apt_dir / 'lists')};",
        f"Dir::State::status {q(apt_dir / 'status')};",
        f"Dir::Cache {q(apt_dir / 'cache')};",
        f"Dir::Log {q(apt_dir / 'log')};",
        'Acquire::Languages "none";',
        "#clear APT::Update::Pre-Invoke;",
        "#clear APT::Update::Post-Invoke;",
        "#clear APT::Update::Post-Invoke-Success;",
        "#clear DPkg::Pre-Invoke;",
        "#clear DPkg::Post-Invoke;",
        "#clear DPkg::Pre-Install-Pkgs;",
        "",
    ])


def wrapper_script(spec: BuildSpec, root: Path, arch: str, *, package_version: str = "",
                   host_module_dir: str | None = None, unshare: str = "/usr/bin/unshare",
                   mount: str = "/bin/mount") -> str:
    """The /bin/sh wrapper that runs ``root``'s qemu-system-``arch`` (see the module docstring).

    Library and firmware folders that ``root`` lacks are left out. Before the namespace, the wrapper checks
    CAP_SYS_ADMIN (bit 21 of CapEff in /proc/self/status) with shell builtins only: no program starts
    but unshare, one mount and QEMU (a QEMU start is the static prediction's unit of cost)."""
    host_modules = host_module_dir if host_module_dir is not None else spec.host_module_dir
    lib_dirs = [d for d in spec.library_dirs if (root / d).is_dir()]
    command = [f'"$root/{spec.binary(arch)}"']
    command += [f'-L "$root/{firmware}"' for firmware in spec.firmware_dirs if (root / firmware).is_dir()]
    command.append('"$@"')
    bind = (f'{shlex.quote(mount)} --bind "$1" "$2" || {{ echo "qemu-conformance: cannot bind $1 over'
            ' $2: a private mount namespace needs root" >&2; exit 126; }')
    lines = [
        "#!/bin/sh",
        f"# qemu-system-{arch} of the QEMU {spec.name} build"
        + (f" (Debian {package_version})" if package_version else "") + ", written by qemu-conformance",
        "# (conformance/builds.py). Every step execs: this pid becomes QEMU's, inherited fds and",
        "# a parent-death signal set before exec survive. With a host QEMU module folder present,",
        "# QEMU runs in a private mount namespace with the build's module folder bound over it, so",
        '# it never loads the host\'s modules ("Only modules from the same build can be loaded").',
        f"root={shlex.quote(str(root))}",
        f"host_modules={shlex.quote(host_modules)}",
    ]
    if lib_dirs:  # for QEMU only: set by the last shell before it execs QEMU, not for unshare or mount
        paths = ":".join(f"$root/{d}" for d in lib_dirs)
        lines.append(f'qemu_libs="{paths}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"')
        inner = f'{bind}; LD_LIBRARY_PATH=$3; export LD_LIBRARY_PATH; shift 3; exec "$@"'
        inner_args, direct = '"$qemu_libs" ', ['LD_LIBRARY_PATH=$qemu_libs', "export LD_LIBRARY_PATH"]
    else:
        inner, inner_args, direct = f'{bind}; shift 2; exec "$@"', "", []
    lines += [
        "set -- " + " \\\n    ".join(command),
        'if [ -d "$host_modules" ]; then',
        "    # CAP_SYS_ADMIN (CapEff bit 21) makes the namespace: read with builtins, no program started",
        "    caps=",
        "    while read -r key value; do",
        '        if [ "$key" = CapEff: ]; then caps=$value; break; fi',
        "    done </proc/self/status",
        '    case $caps in',
        "        ''|*[!0-9a-fA-F]*) ;;  # unreadable: unshare says why if it fails",
        "        *) if [ $(( (0x$caps >> 21) & 1 )) = 0 ]; then",
        f'               echo "qemu-conformance: QEMU {spec.name} needs a private mount namespace to hide the host\'s'
        ' QEMU modules in $host_modules: run it as root" >&2',
        "               exit 126",
        "           fi ;;",
        "    esac",
        f"    exec {shlex.quote(unshare)} --mount -- /bin/sh -c {shlex.quote(inner)} qemu-conformance \\",
        f'        "$root/{spec.module_dir}" "$host_modules" {inner_args}"$@"',
        "fi",
        *direct,
        'exec "$@"',
        "",
    ]
    return "\n".join(lines)


# --- preparing --------------------------------------------------------------------------------


def prepare_build(name: str, *, dest: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Fetch, unpack, wrap and check build ``name``; return its folder ``<dest>/qemu-<name>``.

    Idempotent: once prepared (prepared.stamp matches the recipe and the folder) it returns
    at once. Needs apt-get, dpkg and network access to deb.debian.org; running the wrappers
    needs root when the host has a QEMU module folder. Failures raise QemuBuildError.
    """
    spec = KNOWN_BUILDS.get(name)
    if spec is None:
        raise QemuBuildError(f"unknown QEMU build '{name}'",
                             hint=f"known builds: {', '.join(KNOWN_BUILDS)}")
    folder = build_folder(name, dest).resolve()
    if _is_current(spec, folder):
        return folder
    if _old_wrappers(spec, folder):
        with _locked(folder / ".lock"):
            if not _is_current(spec, folder) and _old_wrappers(spec, folder):
                _rewrap(spec, folder, log)
        if _is_current(spec, folder):
            return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QemuBuildError(f"cannot create the build folder {folder}: {exc.strerror}",
                             hint="set QEMU_CONFORMANCE_BUILDS or pass --dest to a writable folder") from exc
    with _locked(folder / ".lock"):
        if _is_current(spec, folder):  # another process prepared it while we waited
            return folder
        _prepare(spec, folder, log)
    return folder


def _is_current(spec: BuildSpec, folder: Path) -> bool:
    try:
        stamp = (folder / STAMP_NAME).read_text().strip()
    except OSError:
        return False
    return stamp == fingerprint(spec, folder) and all(
        (folder / "bin" / f"qemu-system-{arch}").is_file() for arch in spec.arches)


def _old_wrappers(spec: BuildSpec, folder: Path) -> bool:
    """Whether ``folder`` was prepared by a format of REWRAP_FORMATS: only its wrappers are out of date."""
    try:
        stamp = (folder / STAMP_NAME).read_text().strip()
    except OSError:
        return False
    return (any(stamp == fingerprint(spec, folder, old) for old in REWRAP_FORMATS)
            and (folder / BUILD_JSON_NAME).is_file() and (folder / "root").is_dir())


def _write_wrappers(spec: BuildSpec, folder: Path, package_version: str, tools: dict[str, str]) -> None:
    """bin/qemu-system-<arch> for each arch, each written beside and renamed over the old one (a QEMU
    starting meanwhile runs the old wrapper or the new, whole)."""
    bindir = folder / "bin"
    bindir.mkdir(exist_ok=True)
    for arch in spec.arches:
        wrapper = bindir / f"qemu-system-{arch}"
        new = wrapper.with_name(f".{wrapper.name}.new")
        new.write_text(wrapper_script(spec, folder / "root", arch, package_version=package_version,
                                      unshare=tools["unshare"], mount=tools["mount"]))
        new.chmod(0o755)
        new.replace(wrapper)


def _rewrap(spec: BuildSpec, folder: Path, log: Callable[[str], None]) -> None:
    """New wrappers for a build prepared by an older wrapper format (_old_wrappers), checked as
    _prepare checks them (--version, modules), then the current stamp. No download."""
    info = json.loads((folder / BUILD_JSON_NAME).read_text())
    tools = {tool: _which(tool) or f"/usr/bin/{tool}" for tool in ("unshare", "mount")}
    _write_wrappers(spec, folder, str(info.get("package_version", "")), tools)
    for arch in spec.arches:
        wrapper = folder / "bin" / f"qemu-system-{arch}"
        line = qemu_version_line(wrapper)
        if line != info.get("version_line", line):
            raise QemuBuildError(f"QEMU {spec.name}: the new {wrapper.name} says {line!r}, build.json "
                                 f"{info.get('version_line')!r}",
                                 hint=f"delete {folder} and run `qemu-conformance builds fetch {spec.name}`")
        qmp_module_check(wrapper)
    (folder / STAMP_NAME).write_text(fingerprint(spec, folder) + "\n")
    log(f"QEMU {spec.name}: wrappers rewritten (format {WRAPPER_FORMAT}), nothing downloaded -> {folder / 'bin'}")


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare(spec: BuildSpec, folder: Path, log: Callable[[str], None]) -> None:
    started = time.monotonic()
    fetch = f"`qemu-conformance builds fetch {spec.name}`"
    tools = _host_tools(spec)
    for stale in (STAMP_NAME, BUILD_JSON_NAME):
        (folder / stale).unlink(missing_ok=True)
    for stale_dir in ("root", "bin", "debs"):
        shutil.rmtree(folder / stale_dir, ignore_errors=True)

    apt_dir = folder / "apt"
    _write_apt_state(spec, apt_dir)
    log(f"QEMU {spec.name}: apt-get update ({', '.join(s.suite for s in spec.sources)}), "
        f"private lists in {apt_dir}")
    _apt_update(spec, apt_dir, fetch)

    debs = folder / "debs"
    log(f"QEMU {spec.name}: downloading {len(spec.packages)} packages")
    _apt_download(spec, apt_dir, debs, log, fetch)

    root = folder / "root"
    root.mkdir()
    log(f"QEMU {spec.name}: unpacking into {root}")
    packages = [_unpack(deb, root) for deb in sorted(debs.glob("*.deb"))]
    (root / spec.module_dir).mkdir(parents=True, exist_ok=True)  # 5.2 ships no modules at all
    for arch in spec.arches:
        if not (root / spec.binary(arch)).is_file():
            raise QemuBuildError(f"QEMU {spec.name}: the packages hold no {spec.binary(arch)}",
                                 hint="fix the package list in conformance/builds.py KNOWN_BUILDS")
    _check_libraries(spec, root)

    qemu_package = next((p["version"] for p in packages if p["name"] == "qemu-system-common"), "")
    bindir = folder / "bin"
    _write_wrappers(spec, folder, qemu_package, tools)

    arches: dict[str, Any] = {}
    version = ""
    version_line = ""
    for arch in spec.arches:
        wrapper = bindir / f"qemu-system-{arch}"
        log(f"QEMU {spec.name}: checking {wrapper.name} (--version, modules via qom-list-types)")
        line = qemu_version_line(wrapper)
        found = _VERSION_LINE.search(line)
        if not found or not found.group(1).startswith(spec.version_prefix):
            raise QemuBuildError(f"QEMU {spec.name}: {wrapper.name} --version says {line!r}, "
                                 f"expected {spec.version_prefix}x",
                                 hint="the archive moved on: update KNOWN_BUILDS in conformance/builds.py")
        version, version_line = found.group(1), line
        arches[arch] = {"wrapper": str(wrapper), "binary": str(root / spec.binary(arch)),
                        "qom_types": qmp_module_check(wrapper)}

    seconds = round(time.monotonic() - started, 1)
    info = {
        "name": spec.name,
        "title": spec.title,
        "version": version,
        "version_line": version_line,
        "package_version": qemu_package,
        "arches": list(spec.arches),
        "binaries": arches,
        "packages": packages,
        "sources": [s.line(spec.keyring) for s in spec.sources],
        "root": str(root),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "prepare_seconds": seconds,
    }
    (folder / BUILD_JSON_NAME).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(debs, ignore_errors=True)  # build.json records what they were
    (folder / STAMP_NAME).write_text(fingerprint(spec, folder) + "\n")
    log(f"QEMU {spec.name}: ready in {seconds} s: {version_line} -> {bindir}")


def _host_tools(spec: BuildSpec) -> dict[str, str]:
    """Absolute paths of the host tools needed; checks the mount namespace works if needed."""
    tools: dict[str, str] = {}
    for tool in ("apt-get", "dpkg-deb", "unshare", "mount"):
        path = _which(tool)
        if path is None:
            raise QemuBuildError(f"cannot prepare QEMU {spec.name}: `{tool}` not found",
                                 hint="run on Debian or Ubuntu (apt, dpkg, util-linux)")
        tools[tool] = path
    if not Path(spec.keyring).is_file():
        raise QemuBuildError(f"cannot prepare QEMU {spec.name}: no Debian archive keyring {spec.keyring}",
                             hint="apt-get install debian-archive-keyring")
    if Path(spec.host_module_dir).is_dir():
        probe = _run([tools["unshare"], "--mount", "--", "true"], timeout=30)
        if probe.returncode != 0:
            reason = _last_line(probe.stderr) or f"exit code {probe.returncode}"
            raise QemuBuildError(
                f"cannot prepare QEMU {spec.name}: no private mount namespace ({reason}); it is needed to "
                f"hide the host's QEMU modules in {spec.host_module_dir}",
                hint="run as root or with CAP_SYS_ADMIN")
    return tools


def _write_apt_state(spec: BuildSpec | CpuMapSpec, apt_dir: Path) -> None:
    for sub in ("sources.list.d", "preferences.d", "state", "lists/partial", "cache/archives/partial", "log"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "status").write_text("")  # empty dpkg status: the host's packages do not count
    (apt_dir / "sources.list").write_text(sources_list_text(spec))
    (apt_dir / "apt.conf").write_text(apt_config_text(apt_dir))


def _apt(apt_dir: Path, args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return _run(["apt-get", "-q", "-c", str(apt_dir / "apt.conf"), *args], cwd=cwd, timeout=APT_TIMEOUT)


def _apt_update(spec: BuildSpec | CpuMapSpec, apt_dir: Path, fetch: str) -> None:
    proc = _apt(apt_dir, ["--error-on=any", "update"])
    trouble = _apt_errors(proc.stdout + proc.stderr)
    if proc.returncode != 0 or trouble:
        reason = trouble[0] if trouble else f"exit code {proc.returncode}"
        raise QemuBuildError(f"cannot prepare {spec.label}: apt-get update failed: {reason}",
                             hint=f"check network access to deb.debian.org (or the proxy in "
                                  f"/etc/apt/apt.conf.d), then run {fetch} again")


def _apt_download(spec: BuildSpec | CpuMapSpec, apt_dir: Path, debs: Path, log: Callable[[str], None],
                  fetch: str) -> None:
    wanted = {p.name: p.apt_spec() for p in spec.packages}
    by_name = {p.name: p for p in spec.packages}
    for attempt in (1, 2):
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir(parents=True)
        proc = _apt(apt_dir, ["download", *wanted.values()], cwd=debs)
        if proc.returncode == 0 and not _apt_errors(proc.stderr):
            return
        missing = [(ver, pkg) for ver, pkg in _APT_VERSION_MISSING.findall(proc.stderr) if pkg in by_name]
        if attempt == 1 and missing:
            for version, pkg in missing:
                wanted[pkg] = by_name[pkg].apt_spec(pinned=False)
                log(f"{spec.label}: {pkg}={version} has left the archive; taking {wanted[pkg]} instead")
            continue
        trouble = _apt_errors(proc.stderr)
        reason = trouble[0] if trouble else f"exit code {proc.returncode}"
        raise QemuBuildError(f"cannot prepare {spec.label}: apt-get download failed: {reason}",
                             hint=f"check network access to deb.debian.org and the recipe in "
                                  f"conformance/builds.py, then run {fetch} again")


def _unpack(deb: Path, root: Path) -> dict[str, str]:
    fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"], timeout=60)
    extract = _run(["dpkg-deb", "-x", str(deb), str(root)], timeout=300)
    for proc in (fields, extract):
        if proc.returncode != 0:
            raise QemuBuildError(f"cannot unpack {deb.name}: {_last_line(proc.stderr)}",
                                 hint=f"delete {root.parent} and fetch again")
    info: dict[str, str] = {}
    for line in fields.stdout.splitlines():
        key, _, value = line.partition(":")
        info[key.strip().lower()] = value.strip()
    return {"name": info.get("package", deb.name), "version": info.get("version", ""),
            "architecture": info.get("architecture", "")}


def _check_libraries(spec: BuildSpec, root: Path) -> None:
    """Every shared library the binaries need is found (host + the build's library_dirs)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return  # --version below reports a missing library anyway
    env = dict(os.environ)
    lib_dirs = [str(root / d) for d in spec.library_dirs if (root / d).is_dir()]
    if lib_dirs:
        env["LD_LIBRARY_PATH"] = ":".join(lib_dirs)
    missing: set[str] = set()
    for arch in spec.arches:
        proc = _run([ldd, str(root / spec.binary(arch))], timeout=60, env=env)
        missing.update(line.split("=>")[0].strip()
                       for line in proc.stdout.splitlines() if "not found" in line)
    if missing:
        raise QemuBuildError(f"QEMU {spec.name}: shared libraries not found: {', '.join(sorted(missing))}",
                             hint="add the packages that provide them to KNOWN_BUILDS in "
                                  "conformance/builds.py, or install them on the host")


def _apt_errors(output: str) -> list[str]:
    """apt's error lines (E:, and W: lines that mean a failed fetch)."""
    lines = [line.strip() for line in output.splitlines()]
    return [line for line in lines
            if line.startswith("E:") or (line.startswith("W:") and ("Failed to fetch" in line
                                                                    or "failed to download" in line))]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _run(argv: list[str], *, timeout: float, cwd: Path | None = None,
         env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise QemuBuildError(f"`{' '.join(argv[:3])} ...` did not finish within {timeout:.0f} s",
                             hint="check the network and the machine's load, then try again") from exc
    except OSError as exc:
        raise QemuBuildError(f"cannot run {argv[0]}: {exc.strerror}",
                             hint="check that it is installed and executable") from exc


# --- checking a wrapper -----------------------------------------------------------------------


def qemu_version_line(wrapper: Path) -> str:
    """First line of ``<wrapper> --version``; QemuBuildError when it does not run."""
    proc = _run([str(wrapper), "--version"], timeout=QEMU_TIMEOUT)
    line = proc.stdout.splitlines()[0].strip() if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line:
        raise QemuBuildError(f"{wrapper} --version failed: {_last_line(proc.stderr) or proc.returncode}",
                             hint="see the wrapper's comments; run as root; fetch the build again")
    return line


def qmp_module_check(wrapper: Path) -> int:
    """Run ``-machine none``, ask qom-list-types over QMP (which loads every module) and return the
    number of types. QemuBuildError if QEMU reports another build's modules or does not answer."""
    import tempfile

    from conformance.errors import LiveError
    from conformance.qemu.process import QemuProcess, file_tail

    with tempfile.TemporaryDirectory(prefix="qemu-conformance-module-check-") as tmp:
        qemu = QemuProcess(wrapper, ["-machine", "none", "-nodefaults", "-display", "none"], tmp,
                           name=f"{wrapper.name} module check", qmp_timeout=QEMU_TIMEOUT)
        types: Any = None
        failure = ""
        try:
            with qemu:
                types = qemu.qmp.cmd("qom-list-types", timeout=QEMU_TIMEOUT)
        except LiveError as exc:
            failure = exc.message
        stderr = file_tail(qemu.stderr_path, 200)
    trouble = [line for line in stderr.splitlines() if MODULE_TROUBLE.search(line)]
    if trouble:
        raise QemuBuildError(f"{wrapper.name} loads modules of another QEMU: {trouble[0].strip()}",
                             hint="run it as root so the wrapper can bind its own module folder")
    if not isinstance(types, list):
        raise QemuBuildError(f"{wrapper.name} did not answer qom-list-types: {failure or _last_line(stderr)}",
                             hint="run the wrapper by hand with -machine none -qmp stdio to see why")
    return len(types)


# --- libvirt's CPU map -----------------------------------------------------------------------


@dataclass(frozen=True)
class CpuMapSpec:
    """Where libvirt's CPU map comes from: one Debian package, of which only ``member`` is kept.

    libvirt's CPU map (x86 feature names -> CPUID/MSR bits, CPU models with their vendors,
    signatures and features) is what turns QEMU's host CPU expansion into the model and
    feature list of ``<cpu mode='host-model'>``. It is read at run time, never copied into
    the project (conformance/caps/cpu_map.py picks the folder).
    """

    name: str
    title: str
    sources: tuple[Source, ...]
    packages: tuple[Package, ...]
    member: str = "usr/share/libvirt/cpu_map"
    keyring: str = DEBIAN_KEYRING

    @property
    def label(self) -> str:
        return self.title


CPU_MAP = CpuMapSpec(
    name="libvirt-trixie",
    title="libvirt's CPU map from Debian trixie (libvirt 11.3)",
    sources=(Source(DEBIAN_MIRROR, "trixie"),),
    # bookworm ships /usr/share/libvirt/cpu_map in libvirt0; trixie moved it to libvirt-common
    # (which libvirt0 depends on, same version)
    packages=(Package("libvirt-common", release="trixie"),),
)
CPU_MAP_JSON_NAME = "cpu-map.json"


def cpu_map_folder(base: Path | None = None, spec: CpuMapSpec = CPU_MAP) -> Path:
    """``<base>/cpu-map/<name>``; base defaults to the cache root (QEMU_CONFORMANCE_CACHE)."""
    return Path(base if base is not None else cache_dir()) / "cpu-map" / spec.name


def fetched_cpu_map(base: Path | None = None, spec: CpuMapSpec = CPU_MAP) -> tuple[Path, str] | None:
    """(the cpu_map folder, the libvirt package version) of a fetched map, or None."""
    folder = cpu_map_folder(base, spec)
    try:
        info = json.loads((folder / CPU_MAP_JSON_NAME).read_text())
    except (OSError, ValueError):
        return None
    cpu_map = folder / "cpu_map"
    if not isinstance(info, dict) or not (cpu_map / "index.xml").is_file():
        return None
    return cpu_map, str(info.get("version", ""))


def prepare_cpu_map(*, dest: Path | None = None, spec: CpuMapSpec = CPU_MAP,
                    log: Callable[[str], None] = print) -> Path:
    """Fetch ``spec``'s package with a private apt state and keep only its CPU map.

    Returns the cpu_map folder (``<dest>/cpu-map/<name>/cpu_map``). Idempotent: a fetched map
    is returned at once. Needs apt-get, dpkg-deb and network access to deb.debian.org.
    """
    found = fetched_cpu_map(dest, spec)
    if found is not None:
        return found[0]
    folder = cpu_map_folder(dest, spec).resolve()
    fetch = "`qemu-conformance builds cpu-map`"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QemuBuildError(f"cannot create the CPU map folder {folder}: {exc.strerror}",
                             hint="set QEMU_CONFORMANCE_CACHE to a writable folder") from exc
    with _locked(folder / ".lock"):
        found = fetched_cpu_map(dest, spec)
        if found is not None:
            return found[0]
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin") is None:
                raise QemuBuildError(f"cannot fetch {spec.title}: `{tool}` not found",
                                     hint="run on Debian or Ubuntu, or point QEMU_CONFORMANCE_CPU_MAP at a "
                                          "libvirt cpu_map folder")
        apt_dir = folder / "apt"
        _write_apt_state(spec, apt_dir)
        log(f"{spec.title}: apt-get update ({', '.join(s.suite for s in spec.sources)}), private lists in {apt_dir}")
        _apt_update(spec, apt_dir, fetch)
        debs = folder / "debs"
        _apt_download(spec, apt_dir, debs, log, fetch)
        root = folder / "root"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        packages = [_unpack(deb, root) for deb in sorted(debs.glob("*.deb"))]
        source = root / spec.member
        if not (source / "index.xml").is_file():
            raise QemuBuildError(f"{spec.title}: the packages hold no {spec.member}/index.xml",
                                 hint="fix CPU_MAP in conformance/builds.py")
        target = folder / "cpu_map"
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(source), str(target))
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(debs, ignore_errors=True)
        version = next((p["version"] for p in packages if p["name"] == spec.packages[0].name), "")
        info = {"name": spec.name, "title": spec.title, "version": version, "packages": packages,
                "sources": [s.line(spec.keyring) for s in spec.sources],
                "created": datetime.now(UTC).isoformat(timespec="seconds")}
        (folder / CPU_MAP_JSON_NAME).write_text(json.dumps(info, indent=2) + "\n")
        log(f"{spec.title}: {spec.packages[0].name} {version} -> {target}")
    return target


# --- command line -----------------------------------------------------------------------------


def cli_builds(args: argparse.Namespace) -> int:
    """``qemu-conformance builds fetch [NAME...] [--dest DIR]`` and ``builds list [--dest DIR]``."""
    dest: Path | None = getattr(args, "dest", None)
    action = getattr(args, "action", None)
    if action == "list":
        prepared = {info.get("name"): info for info in list_builds(dest)}
        for name, spec in KNOWN_BUILDS.items():
            info = prepared.pop(name, None)
            if info is None:
                print(f"{name:6} not prepared ({spec.title}): run `qemu-conformance builds fetch {name}`")
                continue
            stale = ("" if info.get("current") else "  [older wrappers: `builds fetch` rewrites them, no download]"
                     if info.get("rewrap") else "  [recipe changed: fetch again]")
            print(f"{name:6} {info.get('version', '?'):8} {','.join(info.get('arches', [])):16} "
                  f"{Path(info['path']) / 'bin'}  (Debian {info.get('package_version', '?')}){stale}")
        for name, info in prepared.items():
            print(f"{name!s:6} {info.get('version', '?'):8} {info['path']}  [not a known build]")
        return 0
    if action == "fetch":
        names = list(getattr(args, "names", None) or KNOWN_BUILDS)
        unknown = [name for name in names if name not in KNOWN_BUILDS]
        if unknown:
            error = QemuBuildError(f"unknown QEMU build {', '.join(map(repr, unknown))}",
                                   hint=f"known builds: {', '.join(KNOWN_BUILDS)}")
            print(f"error: {error}", file=sys.stderr)
            return error.exit_code
        status = 0
        for name in names:
            started = time.monotonic()
            try:
                folder = prepare_build(name, dest=dest)
            except QemuBuildError as error:
                print(f"error: {error}", file=sys.stderr)
                status = error.exit_code
                continue
            info = json.loads((folder / BUILD_JSON_NAME).read_text())
            print(f"QEMU {name}: {info['version_line']} ({','.join(info['arches'])}) -> {folder / 'bin'}"
                  f"  [{time.monotonic() - started:.1f} s]")
        return status
    if action == "cpu-map":
        try:
            print(prepare_cpu_map(dest=dest))
        except QemuBuildError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_code
        return 0
    print(f"error: unknown builds action {action!r} (use fetch, list or cpu-map)", file=sys.stderr)
    return 2

