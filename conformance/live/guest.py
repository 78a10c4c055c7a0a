"""The test guest: a Linux kernel plus a tiny initramfs whose /init reports what it sees.

``build_guest()`` returns a :class:`Guest` (kernel, initrd, recommended kernel command
line). It is built once and cached under ``cache_dir()/guest/<arch>-<key>/``; the key
hashes every input (kernel package version and hash, module list, init script, busybox,
builder version), so a second call costs a few milliseconds. Builds are atomic (a temporary
folder renamed into place, under a file lock), so pytest-xdist workers can call it at once.

Where the pieces come from (nothing is installed on the host):

* Debian's cloud kernel: ``apt-get download linux-image-cloud-<debarch>`` resolved to the
  versioned package it depends on, and ``busybox-static``; both unpacked with ``dpkg-deb -x``.
  The .deb files stay in ``cache_dir()/guest/debs/<debarch>/`` and are reused. A foreign
  architecture (arm64 on an amd64 host) uses private apt lists in
  ``cache_dir()/guest/apt/<debarch>/`` so the host's dpkg and apt state stay untouched; the
  native architecture uses the host's lists first and the private ones when those fail.
* Or the user's own kernel (``kernel=``) and modules folder (``modules=``: ``lib/modules/<ver>``
  or a folder holding it), e.g. on another distribution; busybox then comes from ``busybox=``,
  Debian's busybox-static when apt works, or a static busybox on PATH.

The initramfs (an uncompressed cpio newc written here) holds busybox, the modules (the closure of
:data:`MODULE_ROOTS` over each module's ``.modinfo`` ``depends=``, in load order), /dev/console,
/dev/null and ``/init`` (guest_init.sh; its serial protocol is documented there and parsed by
conformance/live/guest_report.py). /init loads only the modules the VM's devices ask for: the builder
writes their alias patterns and dependencies as a shell script (:func:`modalias_script`) that /init
matches the devices' modaliases against (docs/guest.md, "Which modules /init loads"). Roots the kernel
has built in or lacks are recorded in ``Guest.builtin`` / ``Guest.missing`` (Debian's cloud kernel has no
ahci, e1000, e1000e).

Boot time, option by option (why the kernel command line is ``console=X`` + ``_APPEND_COMMON``, why
module signatures are stripped, what is left): docs/guest.md, measured 2026-11-26.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from conformance.data import package_file
from conformance.errors import GuestBuildError
from conformance.paths import cache_dir

#: Bump when the builder's output changes for the same inputs (2: /init loads only the modules the VM's devices
#: need, lib/modules/modalias.sh).
BUILDER_VERSION = "2"

#: Modules the guest has when the kernel has them, with everything they depend on (/init loads those the VM's
#: devices ask for). Every module loaded costs ~4 ms of boot under TCG.
MODULE_ROOTS: tuple[str, ...] = (
    "virtio_pci",      # virtio over PCI (+ virtio, virtio_ring, virtio_pci_*_dev)
    "virtio_mmio",     # virtio-mmio transports (aarch64 virt: -device virtio-*-device)
    "virtio_net",      # + failover, net_failover
    "net_failover",
    "virtio_blk",
    "virtio_scsi",     # + scsi_mod
    "sd_mod",          # SCSI/SATA disks
    "sr_mod",          # CD-ROMs (+ cdrom)
    "virtio_console",
    "virtio_rng",
    "virtio_balloon",
    "vmxnet3",         # a failover primary Debian's cloud kernel has
    "e1000",           # not in Debian's cloud kernel
    "e1000e",          # not in Debian's cloud kernel
    "ahci",            # SATA (q35); not in Debian's cloud kernel
    "ata_piix",        # IDE (pc machine)
)

#: Drivers of the device-rich cases (templates/cases.toml ``guest = "generic"``), loaded on top of
#: MODULE_ROOTS by the generic flavour only: Debian's cloud kernel has none of them.
DEVICE_MODULE_ROOTS: tuple[str, ...] = (
    # SCSI HBAs; not am53c974: Linux 6.1's esp_scsi oopses (NULL in esp_reset_cleanup) on an interrupt
    # taken while it probes QEMU's am53c974/dc390 (2026-12-07, q35-storage-rich)
    "sym53c8xx", "mptsas", "megaraid_sas", "vmw_pvscsi",
    "usb_storage", "uas", "sdhci_pci", "mmc_block", "9pnet_virtio", "9p",
    "8139cp", "ne2k_pci", "pcnet32", "tulip",                            # NICs
    "uhci_hcd", "ehci_pci", "ohci_pci", "xhci_pci", "usbhid",            # USB
    # the HD-audio codec driver before the controller's: snd_hda_intel configures its codecs in the background
    # and gives up ("Cannot probe codecs") when no codec driver is loaded yet
    "snd_intel8x0", "snd_ens1370", "snd_hda_codec_generic", "snd_hda_intel",
    "i6300esb", "pvpanic_pci", "virtio_input", "virtio_mem", "virtio_crypto", "virtio_iommu",
    "tpci200", "kvaser_pci", "ctucan_pci",
)

#: Guest flavours: the Debian kernel meta-package (``{debarch}`` filled in) and the module roots.
#: "cloud" (every case unless it says otherwise) boots in ~1.7 s; "generic" has the drivers of
#: emulated hardware and costs a few seconds more (docs/guest.md).
FLAVOURS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cloud": ("linux-image-cloud-{debarch}", MODULE_ROOTS),
    "generic": ("linux-image-{debarch}", MODULE_ROOTS + DEVICE_MODULE_ROOTS),
}

#: Modules that no device's modalias names at the moment /init looks, loaded with the module given
#: (conformance/live/guest_init.sh loads only what the VM's devices ask for, docs/guest.md):
IMPLIED_MODULES: dict[str, tuple[str, ...]] = {
    # disks and CD-ROMs appear when their host adapter probes (ATA ports asynchronously), and most adapters load
    # after sd_mod and sr_mod: they must be there first
    "scsi_mod": ("sd_mod", "sr_mod"),
    # USB devices enumerate in the background once their host controller's driver has probed
    "usbcore": ("usbhid", "usb_storage", "uas"),
    # an SD card is found after its host controller probes
    "mmc_core": ("mmc_block",),
    # QEMU's HD-audio codecs (vendor 1af4) match no codec module's alias: the generic parser binds them, and it
    # must be loaded before snd_hda_intel probes its codecs (docs/guest.md)
    "snd_hda_core": ("snd_hda_codec_generic",),
    # the 9p filesystem over its virtio transport (its alias is fs-9p: no device names it)
    "9pnet_virtio": ("9p",),
}

#: Modules after whose loading /init looks at the devices again: the virtio transports create the virtio devices
#: (virtio-net, -blk, ...) as they probe, and only then can those ask for their drivers. Both are the first
#: roots, so the drivers of virtio devices and everything they need come after them in the load order.
RESCAN_AFTER: tuple[str, ...] = ("virtio_pci", "virtio_mmio")

#: Drivers of a failover primary: QEMU hot-plugs the primary once a virtio-net device negotiated failover
#: (VIRTIO_NET_F_STANDBY), after the boot's look at the devices; /init loads these then, so that the primary
#: binds as it appears.
FAILOVER_PRIMARY_MODULES: tuple[str, ...] = ("vmxnet3", "e1000e", "e1000")

#: arch -> (Debian architecture, console)
_ARCHES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "ttyS0"),
    "aarch64": ("arm64", "ttyAMA0"),
}
_ELF_MACHINE = {"x86_64": 62, "aarch64": 183}

#: Kernel command line after console= (docs/guest.md says what each option gains).
_APPEND_COMMON = "panic=-1 quiet cryptomgr.notests scsi_mod.scan=sync"

#: gzip level of the initramfs, 0: an uncompressed cpio. The kernel inflates a gzip one on the emulated CPU
#: (0.07-0.11 QEMU CPU s a cloud boot, 0.3 a generic one); QEMU puts the larger file in guest RAM by a host-side
#: copy (docs/guest.md, "The initramfs is not compressed"). Part of the recipe: changing it changes the cache key.
_GZIP_LEVEL = 0

_APT_TIMEOUT = 300
_INIT_SCRIPT = "guest_init.sh"
_SIG_MAGIC = b"~Module signature appended~\n"

_NO_DEBIAN_HINT = ("on a host without apt/dpkg pass --kernel IMAGE --modules lib/modules/VERSION "
                   "(a kernel with virtio drivers) and a static busybox (--busybox PATH, or install "
                   "busybox-static / a static busybox on PATH)")


def _no_log(_message: str) -> None:
    pass


class GuestDownloadError(GuestBuildError):
    """The guest's packages could not be downloaded (no network, no such package)."""


@dataclass(frozen=True)
class Guest:
    """A bootable test guest: ``-kernel kernel -initrd initrd -append append``.

    Extra kernel options the guest's /init reads: ``guest.shell=<tty>`` runs a command shell
    (no echo) on that tty (e.g. ttyS1: give QEMU a second ``-serial``), ``guest.hb=<s>`` sets
    the heartbeat period.
    """

    arch: str
    kernel: Path
    initrd: Path
    kernel_version: str
    console: str
    append: str
    key: str
    modules: tuple[str, ...] = ()  # loaded by /init, in this order
    builtin: tuple[str, ...] = ()  # MODULE_ROOTS the kernel has built in
    missing: tuple[str, ...] = ()  # MODULE_ROOTS the kernel has neither built in nor as a module
    notes: tuple[str, ...] = field(default=(), compare=False)
    flavour: str = "cloud"

    @property
    def folder(self) -> Path:
        return self.initrd.parent

    def has_driver(self, module: str) -> bool:
        """Whether the guest can drive what needs ``module`` (loaded or built in)."""
        name = _modname(module)
        return name in self.modules or name in self.builtin

    def boot_args(self, extra_append: str = "", *, direct: bool = False) -> list[str]:
        """``-kernel``, ``-initrd`` and ``-append`` arguments for QEMU. ``direct``: the kernel's own ELF image,
        entered at its PVH entry point, when it has one (x86_64; ``direct_kernel``) instead of the bzImage."""
        append = f"{self.append} {extra_append}".strip()
        kernel = (direct_kernel(self) if direct else None) or self.kernel
        return ["-kernel", str(kernel), "-initrd", str(self.initrd), "-append", append]


def build_guest(arch: str = "x86_64", *, kernel: Path | None = None, modules: Path | None = None,
                busybox: Path | None = None, cache: Path | None = None, refresh: bool = False,
                log: Callable[[str], None] = _no_log, flavour: str = "cloud") -> Guest:
    """Build (once) and return the test guest for ``arch`` ("x86_64" or "aarch64").

    ``kernel``/``modules`` replace Debian's cloud kernel (``modules`` is ``lib/modules/<ver>`` or
    a folder holding one); without ``modules`` a user's kernel gets ``/lib/modules/<its
    version>`` when present, else no modules (it needs virtio built in). ``busybox`` is a static
    busybox for ``arch``. ``cache`` is the guest cache folder (default ``cache_dir()/guest``).
    ``refresh`` asks apt for the newest packages instead of reusing those downloaded before.
    ``flavour`` picks Debian's kernel and the modules loaded (:data:`FLAVOURS`).
    Raises GuestBuildError, GuestDownloadError when a download failed.
    """
    if arch not in _ARCHES:
        raise GuestBuildError(f"unknown guest architecture {arch!r}",
                              hint=f"use one of {', '.join(sorted(_ARCHES))}")
    if flavour not in FLAVOURS:
        raise GuestBuildError(f"unknown guest flavour {flavour!r}", hint=f"use one of {', '.join(FLAVOURS)}")
    kernel_role = "kernel" if flavour == "cloud" else f"kernel-{flavour}"
    roots = FLAVOURS[flavour][1]
    if modules is not None and kernel is None:
        raise GuestBuildError("a modules folder was given without its kernel", path=modules,
                              hint="pass the kernel image too (--kernel)")
    root = Path(cache) if cache is not None else cache_dir() / "guest"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestBuildError(f"cannot create the guest cache ({exc.strerror})", path=root,
                              hint="set QEMU_CONFORMANCE_CACHE to a writable folder") from exc
    init_text = init_script_text()
    debarch = _ARCHES[arch][0]
    if kernel is None and not refresh:
        imported = _imported_guest(root, arch, flavour, init_text, log)
        if imported is not None:
            return imported

    debs: dict[str, _Deb] = {}
    sources: dict[str, object] = {}
    if kernel is None:
        debs = _debian_debs(root, debarch, want_kernel=True, refresh=refresh, log=log, flavour=flavour)
        debs["kernel"] = debs[kernel_role]
        sources["kernel-deb"] = debs["kernel"].identity()
    else:
        kernel = Path(kernel)
        if not kernel.is_file():
            raise GuestBuildError("kernel image not found", path=kernel,
                                  hint="pass a bootable kernel image (x86 bzImage, arm64 Image)")
        if modules is not None:
            modules = _modules_folder(Path(modules))
        else:
            host_modules = Path("/lib/modules") / (kernel_version_of(kernel) or "unknown")
            if (host_modules / "kernel").is_dir():
                modules = host_modules
                log(f"using the modules in {modules}")
        sources["kernel"] = _file_identity(kernel)
        sources["modules"] = _folder_identity(modules) if modules is not None else None
        if busybox is None and shutil.which("apt-get"):
            try:
                debs = _debian_debs(root, debarch, want_kernel=False, refresh=refresh, log=log)
            except GuestBuildError as exc:
                log(f"busybox-static not downloadable ({exc.message}); looking for a static busybox")
    busybox_file: Path | None = None
    if "busybox" in debs and busybox is None:
        sources["busybox-deb"] = debs["busybox"].identity()
    else:
        busybox_file = _find_busybox(arch, busybox)
        sources["busybox"] = _file_identity(busybox_file)

    key_input = {"sources": sources, **_recipe(arch, flavour, init_text)}
    key = hashlib.sha256(json.dumps(key_input, sort_keys=True).encode()).hexdigest()[:16]
    final = root / (f"{arch}-{key}" if flavour == "cloud" else f"{arch}-{flavour}-{key}")
    guest = _load_guest(final)
    if guest is not None:
        return guest
    with _locked(root):
        guest = _load_guest(final)
        if guest is not None:
            return guest
        for stale in root.glob(".tmp-*"):  # left by a killed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        log(f"building the {arch} test guest in {final}")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{arch}-{key}-", dir=root))
        try:
            meta = _build(arch, key, tmp, init_text, debs=debs, kernel=kernel, modules=modules,
                          busybox=busybox_file, roots=roots)
            meta["flavour"] = flavour
            (tmp / "guest.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            tmp.chmod(0o755)
            if final.exists():  # an incomplete leftover (no guest.json): replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"built the {arch} test guest in {time.monotonic() - started:.1f} s")
    guest = _load_guest(final)
    if guest is None:  # pragma: no cover - the rename above is atomic
        raise GuestBuildError("the guest build left no usable result", path=final)
    return guest


def _recipe(arch: str, flavour: str, init_text: str) -> dict[str, object]:
    """Everything a guest's build depends on but its kernel and busybox: an imported guest is used only
    when its recipe is this one (same builder, init script, module roots, command line)."""
    return {"builder": BUILDER_VERSION, "arch": arch, "roots": FLAVOURS[flavour][1],
            "init": hashlib.sha256(init_text.encode()).hexdigest(), "append": _APPEND_COMMON,
            "gzip": _GZIP_LEVEL, **({"flavour": flavour} if flavour != "cloud" else {})}


def recipe_hash(arch: str, flavour: str = "cloud") -> str:
    """The recipe (:func:`_recipe`) of this suite's guest for ``arch`` and ``flavour``, hashed."""
    text = json.dumps(_recipe(arch, flavour, init_script_text()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def init_script_text() -> str:
    """The guest's /init (guest_init.sh, package data beside this module)."""
    path = package_file("live", _INIT_SCRIPT)  # package data (conformance/data.py)
    try:
        return path.read_text()
    except OSError as exc:
        raise GuestBuildError(f"the guest init script is missing ({exc.strerror})", path=path,
                              hint="reinstall qemu-conformance with its package data") from exc


def recommended_append(arch: str) -> str:
    """The kernel command line the guest was measured with (console first)."""
    return f"console={_ARCHES[arch][1]} {_APPEND_COMMON}"


def describe(guest: Guest) -> str:
    """One line for logs: arch, key, kernel version, module count, what the kernel lacks."""
    missing = f", lacks {' '.join(guest.missing)}" if guest.missing else ""
    flavour = "" if guest.flavour == "cloud" else f"{guest.flavour} "
    return (f"{guest.arch} {flavour}guest {guest.key} (kernel {guest.kernel_version}, "
            f"{len(guest.modules)} modules{missing})")


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

def _load_guest(folder: Path) -> Guest | None:
    try:
        meta = json.loads((folder / "guest.json").read_text())
        guest = Guest(arch=meta["arch"], kernel=folder / meta["kernel"], initrd=folder / meta["initrd"],
                      kernel_version=meta["kernel_version"], console=meta["console"],
                      append=meta["append"], key=meta["key"], modules=tuple(meta["modules"]),
                      builtin=tuple(meta["builtin"]), missing=tuple(meta["missing"]),
                      notes=tuple(meta.get("notes", ())), flavour=meta.get("flavour", "cloud"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (guest.kernel.is_file() and guest.initrd.is_file()):
        return None
    return guest


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the guest cache: concurrent builders take turns."""
    with open(root / ".lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_identity(path: Path) -> dict[str, object]:
    """Path, size and content hash of a file (a 27 MB kernel hashes in ~0.1 s)."""
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": _sha256_file(path)}


def _folder_identity(folder: Path) -> dict[str, object]:
    """Cheap identity of a modules folder: every module's relative path, size and mtime."""
    digest = hashlib.sha256()
    for path in sorted(_iter_module_files(folder)):
        st = path.stat()
        digest.update(f"{path.relative_to(folder)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return {"path": str(folder.resolve()), "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Deb:
    package: str
    version: str
    file: Path
    sha256: str

    def identity(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "sha256": self.sha256}


def _debian_debs(root: Path, debarch: str, *, want_kernel: bool, refresh: bool,
                 log: Callable[[str], None], flavour: str = "cloud") -> dict[str, _Deb]:
    """{"kernel": ..., "busybox": ...} .debs for ``debarch``, downloaded once into the cache (a flavour
    other than cloud: its kernel as "kernel-FLAVOUR")."""
    record = root / f"sources-{debarch}.json"
    debdir = root / "debs" / debarch
    kernel_role = "kernel" if flavour == "cloud" else f"kernel-{flavour}"
    wanted = (kernel_role, "busybox") if want_kernel else ("busybox",)
    if not refresh:
        known = _read_record(record, debdir)
        if all(role in known for role in wanted):
            return known
    with _locked(root):
        known = _read_record(record, debdir)
        if not refresh and all(role in known for role in wanted):
            return known
        found = _download(root, debarch, debdir, wanted, log=log, flavour=flavour)
        known.update(found)
        _write_json_atomic(record, {role: {**deb.identity(), "file": deb.file.name}
                                    for role, deb in known.items()})
        return known


def _read_record(record: Path, debdir: Path) -> dict[str, _Deb]:
    try:
        data = json.loads(record.read_text())
        debs = {role: _Deb(item["package"], item["version"], debdir / item["file"], item["sha256"])
                for role, item in data.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    # a file whose content is not the recorded one (truncated, replaced) is fetched again
    return {role: deb for role, deb in debs.items() if deb.file.is_file() and _verified_sha256(deb.file) == deb.sha256}


def _host_debarch() -> str | None:
    try:
        proc = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None


class _Apt:
    """apt-get/apt-cache for one architecture, with the host's or private package lists."""

    def __init__(self, root: Path, debarch: str, *, private: bool) -> None:
        self.debarch = debarch
        self.private = private
        self.folder = root / "apt" / debarch
        self.opts = ["-o", "APT::Sandbox::User=root"] if os.getuid() == 0 else []
        if private:
            lists, cachedir, status = self.folder / "lists", self.folder / "cache", self.folder / "status"
            (lists / "partial").mkdir(parents=True, exist_ok=True)
            (cachedir / "archives" / "partial").mkdir(parents=True, exist_ok=True)
            status.touch()
            self.opts += ["-o", f"APT::Architecture={debarch}", "-o", f"APT::Architectures={debarch}",
                          "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={cachedir}",
                          "-o", f"Dir::State::status={status}", "-o", "Debug::NoLocking=1"]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        what = f"{tool} {' '.join(a for a in args if not a.startswith('-'))}"
        try:
            proc = subprocess.run([tool, *self.opts, *args], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=_APT_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise GuestDownloadError(f"{what} did not finish in {_APT_TIMEOUT} s",
                                     hint="check the network and the apt sources") from exc
        except OSError as exc:
            raise GuestBuildError(f"cannot run {tool}: {exc.strerror}", hint=_NO_DEBIAN_HINT) from exc
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("E:")]
            reason = (errors or proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[0]
            raise GuestDownloadError(f"{what} failed ({self.debarch}): {reason}",
                                     hint="check the network and the apt sources, or pass --kernel "
                                          "and --modules")
        return proc

    def lists_present(self) -> bool:
        return any((self.folder / "lists").glob("*_Packages*"))

    def update(self) -> None:
        proc = self.run("apt-get", "-q", "update")
        if not self.lists_present():
            problems = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:"))]
            reason = problems[0] if problems else "no Packages file"
            raise GuestDownloadError(f"apt-get update ({self.debarch}, private lists) fetched no package "
                                     f"lists: {reason}", hint="check the network and the apt sources")

    def versioned_kernel(self, meta: str) -> str:
        """linux-image-cloud-amd64 -> linux-image-6.1.0-NN-cloud-amd64 (what it depends on)."""
        out = self.run("apt-cache", "depends", "--important", meta).stdout
        match = re.search(r"^\s*\|?Depends:\s*(linux-image-[^\s<>]+)", out, re.MULTILINE)
        return match.group(1) if match else meta

    def uris(self, packages: Iterable[str]) -> dict[str, tuple[str, int, str]]:
        """package -> (file name, size, sha256) as apt would download it (nothing downloaded)."""
        out = self.run("apt-get", "-q", "--print-uris", "download", *packages).stdout
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0].startswith("'"):
                digest = parts[3].split(":", 1)[1] if parts[3].upper().startswith("SHA256:") else ""
                found[parts[1].split("_", 1)[0]] = (parts[1], int(parts[2]), digest)
        return found


def _download(root: Path, debarch: str, debdir: Path, roles: tuple[str, ...], *,
              log: Callable[[str], None], flavour: str = "cloud") -> dict[str, _Deb]:
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise GuestBuildError("cannot fetch Debian's kernel: apt-get/dpkg-deb not found",
                              hint=_NO_DEBIAN_HINT)
    debdir.mkdir(parents=True, exist_ok=True)
    routes = [False, True] if _host_debarch() == debarch else [True]
    error: GuestBuildError | None = None
    for private in routes:
        apt = _Apt(root, debarch, private=private)
        for fresh in ([False, True] if private and apt.lists_present() else [private]):
            try:
                if fresh:
                    log(f"apt-get update ({debarch}, private lists in {apt.folder})")
                    apt.update()
                names = {"busybox": "busybox-static"}
                for role in (r for r in roles if r.startswith("kernel")):
                    names[role] = apt.versioned_kernel(FLAVOURS[flavour][0].format(debarch=debarch))
                wanted = {role: names[role] for role in roles}
                return _fetch(apt, wanted, debdir, log=log)
            except GuestDownloadError as exc:
                error = error or exc  # the first failure says most (the host's lists route)
    assert error is not None
    raise error


def _fetch(apt: _Apt, wanted: dict[str, str], debdir: Path, *,
           log: Callable[[str], None]) -> dict[str, _Deb]:
    uris = apt.uris(wanted.values())
    absent = [pkg for pkg in wanted.values() if pkg not in uris]
    if absent:
        raise GuestDownloadError(f"apt offers no {' '.join(absent)} for {apt.debarch}",
                                 hint="check the apt sources (Debian bookworm or later)")
    def have(pkg: str) -> bool:  # a cached .deb is used when its content is apt's, not just its size
        path, size, sha = debdir / uris[pkg][0], uris[pkg][1], uris[pkg][2]
        return path.is_file() and path.stat().st_size == size and (not sha or _verified_sha256(path) == sha)

    todo = [pkg for pkg in wanted.values() if not have(pkg)]
    if todo:
        log(f"apt-get download {' '.join(todo)} ({apt.debarch})")
        apt.run("apt-get", "-q", "download", *todo, cwd=debdir)
    debs = {}
    for role, pkg in wanted.items():
        name, _size, sha = uris[pkg]
        path = debdir / name
        if not path.is_file():
            raise GuestDownloadError(f"apt-get download left no {name}", path=debdir)
        actual = _verified_sha256(path)
        if sha and actual != sha:
            path.unlink()
            raise GuestDownloadError(f"downloaded {name} has SHA-256 {actual[:16]}..., apt's lists say {sha[:16]}...",
                                     path=debdir, hint="run `guest build` again (the file was deleted)")
        version = unquote(name).split("_")[1]
        debs[role] = _Deb(pkg, version, path, actual)
    return debs


_VERIFIED_FILE = ".sha256.json"  # beside the .debs: name -> [size, mtime_ns, inode, SHA-256]


def _verified_sha256(path: Path) -> str:
    """The file's SHA-256, hashed again whenever its size, time or inode changed since it was last hashed
    (remembered beside it: the three cached amd64 .debs, 98 MB, hash in ~0.3 s, once)."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    record = path.with_name(_VERIFIED_FILE)
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entry = known.get(path.name)
    if isinstance(entry, list) and len(entry) == 4 and entry[:3] == stamp:
        return str(entry[3])
    digest = _sha256_file(path)
    known[path.name] = [*stamp, digest]
    with suppress(OSError):  # a read-only cache: hashed again next time
        _write_json_atomic(record, known)
    return digest


def _dpkg_extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestBuildError(f"cannot unpack the package ({exc})", path=deb) from exc
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise GuestBuildError(f"cannot unpack the package: {reason}", path=deb,
                              hint="delete the file to download it again")


# --------------------------------------------------------------------------------------------
# Kernels, modules, busybox
# --------------------------------------------------------------------------------------------

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def _modname(name: str) -> str:
    return name.replace("-", "_")


def _module_name_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for suffix in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            return _modname(name[: -len(suffix)])
    return _modname(name)


def _iter_module_files(folder: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(_MODULE_SUFFIXES):
                yield Path(dirpath) / name


def _modules_folder(path: Path) -> Path:
    """lib/modules/<ver> itself, or the one folder of that kind inside ``path``."""
    hint = "pass lib/modules/<version> of the kernel given"
    if not path.is_dir():
        raise GuestBuildError("modules folder not found", path=path, hint=hint)
    if (path / "kernel").is_dir() or (path / "modules.order").is_file():
        return path
    for base in (path / "lib" / "modules", path / "usr" / "lib" / "modules", path):
        found = [p for p in base.glob("*") if (p / "kernel").is_dir()] if base.is_dir() else []
        if len(found) == 1:
            return found[0]
    raise GuestBuildError("not a kernel modules folder (no kernel/ inside)", path=path, hint=hint)


def read_modinfo(data: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section of a kernel module (64-bit little-endian ELF): key -> values."""
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = data[sections[shstrndx][4]:sections[shstrndx][4] + sections[shstrndx][5]]
    info: dict[str, list[str]] = {}
    for name_off, _type, _flags, _addr, offset, size in sections:
        if strtab[name_off:strtab.find(b"\0", name_off)] != b".modinfo":
            continue
        for item in data[offset:offset + size].split(b"\0"):
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, []).append(value)
    return info


def strip_signature(data: bytes) -> bytes:
    """A module without its appended signature (unchanged when it has none)."""
    if not data.endswith(_SIG_MAGIC) or len(data) < len(_SIG_MAGIC) + 12:
        return data
    sig_len, = struct.unpack_from(">I", data, len(data) - len(_SIG_MAGIC) - 4)
    end = len(data) - len(_SIG_MAGIC) - 12 - sig_len
    return data[:end] if end > 0 else data


def _module_bytes(path: Path) -> bytes:
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        if not shutil.which("zstd"):
            raise GuestBuildError("zstd-compressed kernel modules need the zstd tool", path=path,
                                  hint="install zstd")
        return subprocess.run(["zstd", "-dcq", str(path)], capture_output=True, check=True,
                              timeout=60).stdout
    return path.read_bytes()


@dataclass
class _ModulePlan:
    order: list[str]          # load order
    blobs: dict[str, bytes]   # name -> .ko as loaded
    builtin: list[str]
    missing: list[str]
    depends: dict[str, list[str]] = field(default_factory=dict)  # name -> the modules it needs (not built in)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # name -> its device aliases (modalias patterns)


def _read_config(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            config[key] = value
    return config


def _builtin_names(folder: Path) -> set[str]:
    try:
        lines = (folder / "modules.builtin").read_text().splitlines()
    except OSError:
        return set()
    return {_module_name_of(line.strip()) for line in lines if line.strip()}


def _plan_modules(folder: Path | None, *, strip: bool, roots: tuple[str, ...] = MODULE_ROOTS) -> _ModulePlan:
    """``roots`` and what they depend on (``.modinfo`` ``depends=``), in load order."""
    if folder is None:
        return _ModulePlan([], {}, [], list(roots))
    index: dict[str, Path] = {}
    for path in sorted(_iter_module_files(folder)):
        index.setdefault(_module_name_of(path.name), path)
    builtin = _builtin_names(folder)
    order: list[str] = []
    blobs: dict[str, bytes] = {}
    visiting: set[str] = set()
    depends: dict[str, list[str]] = {}
    aliases: dict[str, list[str]] = {}

    def visit(name: str) -> bool:
        if name in blobs or name in builtin:
            return True
        path = index.get(name)
        if path is None:
            return False
        if name in visiting:
            raise GuestBuildError(f"kernel modules depend on each other in a cycle at {name}", path=path)
        visiting.add(name)
        data = _module_bytes(path)
        try:
            info = read_modinfo(data)
        except (ValueError, struct.error, IndexError) as exc:
            raise GuestBuildError(f"unreadable kernel module ({exc})", path=path) from exc
        for dep in (d for value in info.get("depends", []) for d in value.split(",") if d):
            if not visit(_modname(dep)):
                raise GuestBuildError(f"module {name} needs {dep}, which is not in the modules folder",
                                      path=folder, hint="pass the complete lib/modules/<version>")
        visiting.discard(name)
        blobs[name] = strip_signature(data) if strip else data
        depends[name] = [d for d in (_modname(d) for v in info.get("depends", []) for d in v.split(",") if d)
                         if d not in builtin]
        aliases[name] = [a for a in info.get("alias", []) if _is_device_alias(a)]
        order.append(name)
        return True

    missing = [root for root in roots if not visit(root)]
    return _ModulePlan(order, blobs, [r for r in roots if r in builtin], missing, depends, aliases)


def _is_device_alias(alias: str) -> bool:
    """Whether a module alias is a device's modalias pattern ("pci:v00008086d0000100Esv*...", "virtio:d00000001v*"),
    not a name the kernel asks for by itself (char-major-*, fs-*, devname:*, crypto-*)."""
    return ":" in alias and not alias.startswith("devname:")


#: an alias's bus -> the sysfs buses whose devices carry such modaliases (others: the bus of that name)
_SYSFS_BUSES: dict[str, tuple[str, ...]] = {"of": ("platform",), "acpi": ("acpi", "platform")}

#: characters a modalias pattern keeps as they are in a shell ``case`` pattern (the rest is escaped)
_CASE_SAFE = re.compile(r"[A-Za-z0-9*?\[\]!:,._+/=-]")


def _case_pattern(alias: str) -> str:
    return "".join(c if _CASE_SAFE.fullmatch(c) else f"\\{c}" for c in alias)


def modules_wanted(plan_order: list[str], depends: dict[str, list[str]]) -> dict[str, list[str]]:
    """Module -> everything /init loads when it is wanted: the module, what it depends on, and the modules it
    implies (:data:`IMPLIED_MODULES`, with what they need), in load order."""
    position = {name: i for i, name in enumerate(plan_order)}
    wanted: dict[str, list[str]] = {}

    def closure(name: str, seen: set[str]) -> None:
        if name in seen or name not in position:
            return
        seen.add(name)
        for dep in depends.get(name, []):
            closure(dep, seen)
        for extra in IMPLIED_MODULES.get(name, ()):
            closure(extra, seen)

    for name in plan_order:
        found: set[str] = set()
        closure(name, found)
        wanted[name] = sorted(found, key=position.__getitem__)
    return wanted


def modalias_script(plan: _ModulePlan) -> str:
    """``lib/modules/modalias.sh``, sourced by /init: ``need MODULE`` (adds the module and everything it brings,
    :func:`modules_wanted`, to NEED) and ``modalias_needs MODALIAS`` (``need``s every module with an alias pattern
    the device's modalias matches: the modules' own ``alias=`` patterns, fnmatch-style as modprobe matches them,
    grouped by bus and, for PCI, by vendor so that a device is tried against its own few patterns)."""
    wanted = modules_wanted(plan.order, plan.depends)
    named = {d for deps in plan.depends.values() for d in deps} | {m for ms in IMPLIED_MODULES.values() for m in ms}
    always = [m for m in plan.order if not plan.aliases.get(m) and m not in named]  # nothing would ask for them
    buses: list[str] = []  # the sysfs buses whose devices can name a module /init does not load with another
    implied = {m for ms in IMPLIED_MODULES.values() for m in ms}
    for name in plan.order:
        for alias in (() if name in implied else plan.aliases.get(name, [])):
            prefix = re.match(r"[a-z0-9_]*", alias)
            for bus in _SYSFS_BUSES.get(prefix.group(0) if prefix else "", (prefix.group(0) if prefix else "*",)):
                if bus not in buses:
                    buses.append(bus or "*")
    lines = ["# Written by conformance/live/guest.py (modalias_script) from the modules' .modinfo: sourced by /init.",
             f"MODALIAS_FILES=\"{' '.join(f'/sys/bus/{bus}/devices/*/modalias' for bus in buses)}\"",
             f"ALWAYS=\"{' '.join(always)}\"",
             f"RESCAN_AFTER=\"{' '.join(m for m in RESCAN_AFTER if m in plan.order)}\"",
             f"FAILOVER_PRIMARIES=\"{' '.join(m for m in FAILOVER_PRIMARY_MODULES if m in plan.order)}\"",
             "", "need() {", "    local m", "    case $1 in"]
    for name in plan.order:
        if wanted[name] != [name]:
            lines.append(f"    {name}) set -- {' '.join(wanted[name])} ;;")
    lines += ["    esac", "    for m; do", "        case $NEED in *\" $m \"*) ;; *) NEED=\"$NEED$m \" ;; esac",
              "    done", "}", ""]
    # bus ("pci:") -> bucket (PCI vendor "pci:v00008086", or "" for patterns without a literal vendor) -> module
    # -> patterns; patterns whose bus is not literal are tried on every modalias
    buses: dict[str, dict[str, dict[str, list[str]]]] = {}
    anywhere: dict[str, list[str]] = {}
    for name in plan.order:
        for alias in plan.aliases.get(name, []):
            literal = re.split(r"[*?\[]", alias, maxsplit=1)[0]
            bus, colon, _ = literal.partition(":")
            if not colon:
                anywhere.setdefault(name, []).append(_case_pattern(alias))
                continue
            bucket = literal[:13] if bus == "pci" and len(literal) >= 13 else ""
            buses.setdefault(f"{bus}:", {}).setdefault(bucket, {}).setdefault(name, []).append(_case_pattern(alias))

    def tries(by_module: dict[str, list[str]], indent: str) -> list[str]:
        return [f"{indent}case $1 in {'|'.join(patterns)}) need {name} ;; esac" for name, patterns in by_module.items()]

    lines += ["modalias_needs() {", "    case $1 in"]
    for bus, buckets in buses.items():
        lines.append(f"    {_case_pattern(bus)}*)")
        vendors = {key: by_module for key, by_module in buckets.items() if key}
        if vendors:
            lines.append("        case $1 in")
            for key, by_module in vendors.items():
                lines.append(f"        {_case_pattern(key)}*)")
                lines += tries(by_module, " " * 12)
                lines.append("            ;;")
            lines.append("        esac")
        lines += tries(buckets.get("", {}), " " * 8)
        lines.append("        ;;")
    lines.append("    esac")
    lines += tries(anywhere, " " * 4)
    lines += ["}", ""]
    return "\n".join(lines)


def _elf_static_for(path: Path, arch: str) -> bool:
    """Whether ``path`` is a statically linked ELF executable for ``arch``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4:6] != b"\x02\x01":
                return False
            machine, = struct.unpack_from("<H", head, 0x12)
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
    except OSError:
        return False
    if machine != _ELF_MACHINE[arch] or len(table) < phentsize * phnum:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))  # PT_INTERP


def _find_busybox(arch: str, given: Path | None) -> Path:
    if given is not None:
        if _elf_static_for(Path(given), arch):
            return Path(given)
        raise GuestBuildError(f"not a statically linked {arch} busybox", path=given,
                              hint="pass busybox from busybox-static (Debian/Ubuntu) or a static build")
    for name in ("busybox", "busybox.static", "busybox-static"):
        found = shutil.which(name)
        if found and _elf_static_for(Path(found), arch):
            return Path(found)
    raise GuestBuildError(f"no statically linked {arch} busybox found",
                          hint="install busybox-static (Debian/Ubuntu) or a static busybox, or pass "
                               "--busybox PATH")


def kernel_version_of(image: Path) -> str | None:
    """The release in an x86 bzImage header or an uncompressed arm64 Image, None if not found."""
    try:
        with open(image, "rb") as handle:
            head = handle.read(0x1000)
            if head[0x202:0x206] == b"HdrS":
                pointer, = struct.unpack_from("<H", head, 0x20E)
                handle.seek(pointer + 0x200)
                words = handle.read(256).split(b"\0", 1)[0].split()
                return words[0].decode("ascii", "replace") if words else None
            handle.seek(0)
            data = handle.read()
    except OSError:
        return None
    match = re.search(rb"Linux version (\S+)", data)
    return match.group(1).decode("ascii", "replace") if match else None


#: bzImage payload magic -> how to decompress it on the host (None: not here)
_PAYLOADS: dict[bytes, Callable[[bytes], bytes | None]] = {
    b"\xfd7zXZ\x00": lambda data: lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data),
    b"\x1f\x8b": gzip.decompress,
    b"\x02\x21\x4c\x18": lambda data: _tool_decompress(["unlz4", "-c", "-q"], data),  # LZ4 legacy frame
    b"\x28\xb5\x2f\xfd": lambda data: _tool_decompress(["zstd", "-d", "-c", "-q"], data),
}
_XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point note QEMU's x86 -kernel looks for in an ELF kernel


def _tool_decompress(argv: list[str], data: bytes) -> bytes | None:
    """The output of a decompressing tool (its status aside: the payload ends in the kernel's 4-byte size, which
    lz4 reads as a frame it cannot parse; the caller checks the size)."""
    try:
        return subprocess.run(argv, input=data, capture_output=True, timeout=120, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        ptype, _flags, offset, _vaddr, _paddr, size = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        at, end = offset, offset + size
        while at + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, at)
            name = elf[at + 12:at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return _DIGESTS[key]


def direct_kernel(guest: Guest) -> Path | None:
    """The guest kernel's own ELF image (``vmlinux-VERSION-DIGEST`` in the guest's folder, DIGEST that of the
    bzImage), for QEMU to enter at its PVH entry point: x86_64 only, made once from the bzImage's payload
    (decompressed on the host) and None when the payload cannot be decompressed here or the kernel has no PVH
    entry. Under TCG the bzImage's decompressor is emulated: Debian's generic kernel (XZ, 8 MB to 66 MB) spent
    about 4 of its 8.4 CPU s to the boot report there (4.3 s direct; the cloud kernel, LZ4: 2.5 -> 2.15 s),
    measured 2026-12-07 on QEMU 7.2 at load 11 (docs/guest.md)."""
    if guest.arch != "x86_64":
        return None
    try:  # named by the bzImage's content: another kernel file never gets this one's ELF
        name = f"vmlinux-{guest.kernel_version}-{_file_digest(guest.kernel)}"
    except OSError:
        return None
    direct = guest.folder / name
    absent = guest.folder / f".{name}.none"  # tried: none can be made here
    if direct.is_file():
        return direct
    if absent.exists():
        return None
    try:
        image = guest.kernel.read_bytes()
        setup = (image[0x1F1] or 4) + 1
        offset, length = struct.unpack_from("<II", image, 0x248)
        payload = image[setup * 512 + offset:setup * 512 + offset + length]
        unpack = next((how for magic, how in _PAYLOADS.items() if payload.startswith(magic)), None)
        elf = unpack(payload) if unpack is not None and image[0x202:0x206] == b"HdrS" else None
        size, = struct.unpack_from("<I", payload, len(payload) - 4)  # the kernel build appends the size
        if not elf or len(elf) != size or not _has_pvh_entry(elf):
            absent.touch()
            return None
        tmp = direct.with_name(f".{direct.name}.{os.getpid()}.tmp")
        tmp.write_bytes(elf)
        tmp.replace(direct)
    except (OSError, lzma.LZMAError, struct.error, IndexError, EOFError):
        return None
    return direct


# --------------------------------------------------------------------------------------------
# Initramfs
# --------------------------------------------------------------------------------------------

class CpioWriter:
    """A minimal cpio "newc" writer (the format the kernel's initramfs unpacker reads)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 0
        self._size = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._append(b"070701" + b"".join(b"%08X" % value for value in fields) + encoded)
        self._append(data)

    def _append(self, blob: bytes) -> None:
        self._parts.append(blob)
        self._size += len(blob)
        pad = -self._size % 4
        if pad:
            self._parts.append(b"\0" * pad)
            self._size += pad

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, 0o040000 | mode, nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int
    data: bytes
    rdev: tuple[int, int] = (0, 0)


def read_cpio(data: bytes) -> Iterator[CpioEntry]:
    """The entries of a newc archive (gzip-compressed or not); ValueError when malformed."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    offset = 0
    while True:
        if data[offset:offset + 6] != b"070701":
            raise ValueError(f"no cpio newc header at offset {offset}")
        fields = [int(data[offset + 6 + 8 * i:offset + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return
        if body + filesize > len(data):
            raise ValueError(f"cpio entry {name} runs past the end of the archive")
        yield CpioEntry(name, mode, data[body:body + filesize], (fields[9], fields[10]))
        offset = body + filesize + (-filesize % 4)


def _initramfs(init_text: str, key: str, busybox: bytes, plan: _ModulePlan) -> bytes:
    cpio = CpioWriter()
    for folder in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "run", "sbin", "sys", "tmp",
                   "usr", "usr/bin", "usr/sbin"):
        cpio.add_dir(folder)
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_chardev("dev/null", 1, 3, 0o666)
    cpio.add_file("bin/busybox", busybox, 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    for name in plan.order:
        cpio.add_file(f"lib/modules/{name}.ko", plan.blobs[name])
    cpio.add_file("lib/modules/load.list", "".join(f"{name}\n" for name in plan.order).encode())
    cpio.add_file("lib/modules/modalias.sh", modalias_script(plan).encode())
    init = init_text.replace("@GUEST_INIT_VERSION@", f"{BUILDER_VERSION}-{key}")
    cpio.add_file("init", init.encode(), 0o755)
    archive = cpio.finish()
    return gzip.compress(archive, compresslevel=_GZIP_LEVEL, mtime=0) if _GZIP_LEVEL else archive


def _build(arch: str, key: str, out: Path, init_text: str, *, debs: dict[str, _Deb],
           kernel: Path | None, modules: Path | None, busybox: Path | None,
           roots: tuple[str, ...] = MODULE_ROOTS) -> dict[str, object]:
    work = out / "unpack"
    notes: list[str] = []
    if kernel is None:
        _dpkg_extract(debs["kernel"].file, work / "kernel")
        images = sorted((work / "kernel" / "boot").glob("vmlinuz-*"))
        folders = sorted((work / "kernel" / "lib" / "modules").glob("*"))
        if len(images) != 1 or len(folders) != 1:
            raise GuestBuildError("unexpected kernel package layout (want one boot/vmlinuz-* and one "
                                  "lib/modules/*)", path=debs["kernel"].file)
        image, modules, version = images[0], folders[0], folders[0].name
        config = _read_config(work / "kernel" / "boot" / f"config-{version}")
    else:
        image = kernel
        version = modules.name if modules is not None else (kernel_version_of(kernel) or "unknown")
        if modules is not None:
            notes.append(f"modules from {modules}")
        else:
            notes.append("no modules folder: the kernel needs virtio built in")
        config = None
        for candidate in ([modules / "build" / ".config"] if modules else []) + \
                [Path("/boot") / f"config-{version}"]:
            config = _read_config(candidate)
            if config is not None:
                break
    if busybox is None:
        _dpkg_extract(debs["busybox"].file, work / "busybox")
        busybox = work / "busybox" / "bin" / "busybox"
        if not busybox.is_file():
            raise GuestBuildError("busybox-static package without bin/busybox", path=debs["busybox"].file)
    strip = config is not None and config.get("CONFIG_MODULE_SIG_FORCE") != "y"
    if not strip:
        notes.append("module signatures kept (kernel config unknown or enforcing)")
    plan = _plan_modules(modules, strip=strip, roots=roots)
    (out / "initrd.img").write_bytes(_initramfs(init_text, key, busybox.read_bytes(), plan))
    kernel_name = f"vmlinuz-{version}"
    if kernel is None:
        os.replace(image, out / kernel_name)
    else:
        shutil.copyfile(image, out / kernel_name)
    shutil.rmtree(work, ignore_errors=True)
    return {"arch": arch, "kernel": kernel_name, "initrd": "initrd.img", "kernel_version": version,
            "console": _ARCHES[arch][1], "append": recommended_append(arch), "key": key,
            "modules": plan.order, "builtin": plan.builtin, "missing": plan.missing, "notes": notes,
            "builder": BUILDER_VERSION}


__all__ = ["DEVICE_MODULE_ROOTS", "FAILOVER_PRIMARY_MODULES", "FLAVOURS", "IMPLIED_MODULES", "MODULE_ROOTS",
           "RESCAN_AFTER", "CpioEntry", "CpioWriter", "Guest", "GuestDownloadError", "build_guest", "describe",
           "direct_kernel", "init_script_text", "kernel_version_of", "modalias_script", "modules_wanted", "read_cpio",
           "read_modinfo", "recommended_append", "strip_signature"]


# --------------------------------------------------------------------------------------------
# A guest that travels: guest export / guest import
# --------------------------------------------------------------------------------------------

#: The tarball's manifest: format version, and per guest its recipe hash, folder and files with SHA-256.
MANIFEST = "qemu-conformance-guest.json"
EXPORT_FORMAT = 1


def cached_flavours(cache: Path | None = None) -> list[tuple[str, str]]:
    """(arch, flavour) of every guest built in the cache (whatever its recipe)."""
    root = Path(cache) if cache is not None else cache_dir() / "guest"
    found = []
    for arch in _ARCHES:
        for flavour in FLAVOURS:
            prefix = f"{arch}-" if flavour == "cloud" else f"{arch}-{flavour}-"
            if any(re.fullmatch(r"[0-9a-f]{16}", p.name.removeprefix(prefix)) and (p / "guest.json").is_file()
                   for p in root.glob(f"{prefix}*")):
                found.append((arch, flavour))
    return found


def export_guests(target: Path, *, cache: Path | None = None, log: Callable[[str], None] = _no_log) -> list[Guest]:
    """Write every flavour of the test guest in the cache (its current build: kernel, initramfs with its modules,
    guest.json) and a manifest with their SHA-256 into one tarball ``target``; a guest whose build is stale is
    built first (from the cached .debs)."""
    flavours = cached_flavours(cache)
    if not flavours:
        raise GuestBuildError("no test guest in the cache to export", path=Path(cache or cache_dir() / "guest"),
                              hint="run `qemu-conformance guest build` first")
    guests = [build_guest(arch, cache=cache, log=log, flavour=flavour) for arch, flavour in flavours]
    entries = []
    for guest in guests:
        files = {p.name: {"sha256": _sha256_file(p), "size": p.stat().st_size}
                 for p in sorted(guest.folder.iterdir()) if p.is_file()}
        entries.append({"arch": guest.arch, "flavour": guest.flavour, "key": guest.key,
                        "recipe": recipe_hash(guest.arch, guest.flavour), "folder": guest.folder.name,
                        "kernel_version": guest.kernel_version, "files": files})
    manifest = {"format": EXPORT_FORMAT, "builder": BUILDER_VERSION, "guests": entries}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz" if target.name.endswith(("gz", ".tgz")) else "w") as tar:
            blob = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(blob))
            for guest, entry in zip(guests, entries, strict=True):
                for name in entry["files"]:
                    tar.add(guest.folder / name, arcname=f"{entry['folder']}/{name}", recursive=False)
        os.replace(tmp, target)
    except OSError as exc:
        raise GuestBuildError(f"cannot write the guest tarball ({exc.strerror})", path=target) from exc
    finally:
        tmp.unlink(missing_ok=True)
    for guest in guests:
        log(f"exported {describe(guest)}")
    return guests


def import_guests(source: Path, *, cache: Path | None = None, log: Callable[[str], None] = _no_log) -> list[Guest]:
    """Verify a tarball of ``export_guests`` (each file's SHA-256 against the manifest, names inside it only) and
    put its guests into the cache; ``build_guest`` then uses them (when their recipe is this suite's) without
    apt or network."""
    root = Path(cache) if cache is not None else cache_dir() / "guest"
    guests = []
    try:
        with tarfile.open(source, "r:*") as tar:
            manifest = _read_manifest(tar, source)
            root.mkdir(parents=True, exist_ok=True)
            with _locked(root):
                guests = [_import_one(tar, entry, root, source) for entry in manifest["guests"]]
    except (OSError, tarfile.TarError) as exc:
        raise GuestBuildError(f"cannot read the guest tarball ({exc})", path=source,
                              hint="give a file written by `qemu-conformance guest export`") from exc
    for guest in guests:
        log(f"imported {describe(guest)}")
    return guests


def _read_manifest(tar: tarfile.TarFile, source: Path) -> dict[str, Any]:
    try:
        member = tar.extractfile(MANIFEST)
        manifest = json.loads(member.read()) if member is not None else None
    except (KeyError, ValueError, tarfile.TarError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT or not manifest.get("guests"):
        raise GuestBuildError(f"no usable {MANIFEST} in the tarball", path=source,
                              hint="give a file written by `qemu-conformance guest export`")
    for entry in manifest["guests"]:
        names = [entry.get("folder", ""), *entry.get("files", {})]
        if not all(isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9._+-]+", n) and n not in (".", "..")
                   for n in names) or entry.get("arch") not in _ARCHES or entry.get("flavour") not in FLAVOURS:
            raise GuestBuildError(f"the manifest names a guest or file that is not plain: {names[:3]}", path=source)
    return manifest


def _import_one(tar: tarfile.TarFile, entry: dict[str, Any], root: Path, source: Path) -> Guest:
    folder, files = str(entry["folder"]), dict(entry["files"])
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-import-{folder}-", dir=root))
    try:
        for name, want in files.items():
            try:
                member = tar.getmember(f"{folder}/{name}")
                handle = tar.extractfile(member) if member.isfile() else None
            except KeyError:
                handle = None
            if handle is None:
                raise GuestBuildError(f"the tarball lacks {folder}/{name}, which its manifest lists", path=source)
            digest = hashlib.sha256()
            with open(tmp / name, "wb") as out:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != want["sha256"]:
                raise GuestBuildError(f"{folder}/{name}: SHA-256 {digest.hexdigest()[:16]}... is not the manifest's "
                                      f"{str(want['sha256'])[:16]}...", path=source,
                                      hint="the tarball is damaged: export it again")
        guest = _load_guest(tmp)
        if guest is None:
            raise GuestBuildError(f"{folder}: no bootable guest (guest.json, kernel, initrd)", path=source)
        tmp.chmod(0o755)
        final = root / folder
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _write_json_atomic(root / f"imported-{entry['arch']}-{entry['flavour']}.json",
                       {"folder": folder, "recipe": entry["recipe"], "from": str(source)})
    guest = _load_guest(final)
    assert guest is not None
    return guest


def _imported_guest(root: Path, arch: str, flavour: str, init_text: str,
                    log: Callable[[str], None]) -> Guest | None:
    """The guest `guest import` put in the cache for ``arch`` and ``flavour``, when its recipe is this suite's."""
    try:
        record = json.loads((root / f"imported-{arch}-{flavour}.json").read_text())
        folder, recipe = str(record["folder"]), str(record["recipe"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    want = hashlib.sha256(json.dumps(_recipe(arch, flavour, init_text), sort_keys=True).encode()).hexdigest()[:16]
    if recipe != want:
        log(f"the imported {arch} {flavour} guest was built by another version of the suite (recipe {recipe}, "
            f"this one {want}): building instead")
        return None
    return _load_guest(root / folder)
