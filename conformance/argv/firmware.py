"""Firmware: libvirt's pflash set-up and its auto-selection from QEMU firmware descriptors.

``<os firmware='efi'>`` (or 'bios') asks libvirt to pick the firmware. It reads QEMU's
firmware descriptors (JSON, QEMU's docs/interop/firmware.json) from, in this order of
precedence, $XDG_CONFIG_HOME/qemu/firmware, /etc/qemu/firmware and /usr/share/qemu/firmware
(a file name in an earlier folder hides the same name in later ones, an empty file just
hides), sorts them by file name and takes the first that fits the domain: interface
(uefi/bios), architecture and machine type pattern, the requested firmware features
(secure-boot, enrolled-keys), S3/S4, SMM, SEV, the loader's type, format and statelessness.
When libvirt loads an existing definition it also requires a raw image (its behaviour before
9.2); this builder does the same. Set QEMU_CONFORMANCE_FIRMWARE_DIRS (folders separated by
':') to use other descriptors, e.g. libvirt's own test descriptors (tests/qemufirmwaredata),
which the libvirt corpus's expected command lines were made with.

The chosen (or given) loader becomes pflash0 (read-only, always with a format node); the
NVRAM store pflash1, whose path libvirt generates when the domain names none:
/var/lib/libvirt/qemu/nvram/NAME_VARS.fd (.qcow2 for qcow2 stores).
"""

from __future__ import annotations

import fnmatch
import json
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.errors import UnsupportedByQemu
from conformance.paths import env_paths, xdg_dir

if TYPE_CHECKING:
    from conformance.argv.context import Ctx

ENV_FIRMWARE_DIRS = "QEMU_CONFORMANCE_FIRMWARE_DIRS"
# A new definition (libvirt's VIR_DOMAIN_DEF_PARSE_ABI_UPDATE: defining a new domain, the harness's .abi-update
# outputs) may auto-select a firmware image of any format and names a raw NVRAM store after a .raw template; an
# existing definition keeps raw images and .fd stores (qemuDomainDefBootPostParse, qemuFirmwareEnsureNVRAM).
# The batch protocol's "abi_update" sets it per request.
NEW_DEFINITION: ContextVar[bool] = ContextVar("new_definition", default=False)
NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"
_SEV_ES_POLICY = 1 << 2


@dataclass(frozen=True)
class Pflash:
    """The pflash images of a domain: the code (pflash0) and the variable store (pflash1)."""

    code: str
    code_format: str
    code_readonly: bool
    vars: str | None = None
    vars_format: str = "raw"
    secure: bool = False  # pflash writes restricted to SMM (-global cfi.pflash01 secure=on)
    smm: bool = False  # the firmware requires SMM: -machine smm=on


# libvirt's own tests (qemuxmlconftest) read firmware descriptors from tests/qemufirmwaredata of libvirt's source:
# its home/user/.config, etc and usr/share folders stand for $XDG_CONFIG_HOME, /etc and /usr/share. The libvirt
# corpus's expected command lines were made with them, so scoring uses them too when a libvirt source is at hand.
ENV_LIBVIRT_FIRMWARE_DATA = "QEMU_CONFORMANCE_LIBVIRT_FIRMWARE_DATA"


def harness_firmware_dirs(data: Path) -> tuple[Path, ...]:
    """The descriptor folders of libvirt's test harness under a tests/qemufirmwaredata folder, in its order."""
    return tuple(data / sub / "qemu" / "firmware" for sub in ("home/user/.config", "etc", "usr/share"))


def find_harness_firmware_data(corpus: Path | None = None) -> Path | None:
    """libvirt's tests/qemufirmwaredata: $QEMU_CONFORMANCE_LIBVIRT_FIRMWARE_DATA, else the corpus's own copy
    (CORPUS/qemufirmwaredata), else an unpacked libvirt release in the suite's cache
    (~/.cache/qemu-conformance/libvirt-X.Y.Z, the newest); None when there is none (docs/libvirt-corpus.md)."""
    from conformance.paths import cache_dir, env_path

    given = env_path(ENV_LIBVIRT_FIRMWARE_DATA)
    if given is not None:
        return given
    candidates = [corpus / "qemufirmwaredata"] if corpus is not None else []
    def release(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in path.parent.parent.name.removeprefix("libvirt-").split(".") if n.isdigit())

    candidates += sorted(cache_dir().glob("libvirt-*/tests/qemufirmwaredata"), key=release, reverse=True)
    return next((c for c in candidates if (c / "usr" / "share" / "qemu" / "firmware").is_dir()), None)


def firmware_dirs() -> tuple[Path, ...]:
    given = env_paths(ENV_FIRMWARE_DIRS)
    if given is not None:
        return given
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "qemu" / "firmware", Path("/etc/qemu/firmware"), \
        Path("/usr/share/qemu/firmware")


@lru_cache(maxsize=8)
def load_descriptors(dirs: tuple[Path, ...]) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, descriptor) in libvirt's order: by name, earlier folders hiding later ones."""
    chosen: dict[str, Path] = {}
    for folder in dirs:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.suffix == ".json" and entry.name not in chosen:
                chosen[entry.name] = entry
    out = []
    for name in sorted(chosen):
        path = chosen[name]
        try:
            text = path.read_text()
        except OSError:
            continue
        if not text.strip():
            continue  # an empty file masks a descriptor of the same name
        try:
            out.append((str(path), json.loads(text)))
        except ValueError as exc:
            raise UnsupportedByQemu(f"malformed firmware descriptor: {exc}", path=path) from None
    return tuple(out)


def _feature_requests(ctx: Ctx) -> dict[str, bool]:
    return {c.get("name"): c.get("enabled") == "yes" for c in ctx.domain.os.firmware_children
            if getattr(c, "tag", None) == "feature"}


def _matches(ctx: Ctx, desc: dict[str, Any], lattrs: dict[str, str], code: str | None) -> bool:
    d = ctx.domain
    want = {"efi": "uefi", "bios": "bios"}.get(d.os.firmware or "")
    if want not in desc.get("interface-types", []):
        return False
    mapping = desc.get("mapping", {})
    device = mapping.get("device")
    if code:
        filename = (mapping.get("executable") or {}).get("filename") if device == "flash" else mapping.get("filename")
        if filename != code:
            return False
    template = d.os.nvram.attrs.get("template") if d.os.nvram is not None else None
    if device == "flash" and template and (mapping.get("mode", "split") != "split"
                                           or (mapping.get("nvram-template") or {}).get("filename") != template):
        return False  # <nvram template> names the split build's template (qemuFirmwareMatchesPaths)
    arch = ctx.arch
    if not any(t.get("architecture") == arch and any(fnmatch.fnmatchcase(ctx.machine_name, m)
                                                       for m in t.get("machines", []))
               for t in desc.get("targets", [])):
        return False
    features = set(desc.get("features", []))
    if d.pm.get("suspend-to-mem") == "yes" and "acpi-s3" not in features:
        return False
    if d.pm.get("suspend-to-disk") == "yes" and "acpi-s4" not in features:
        return False
    for name, feature in (("secure-boot", "secure-boot"), ("enrolled-keys", "enrolled-keys")):
        wanted = _feature_requests(ctx).get(name)
        if wanted is not None and wanted != (feature in features):
            return False
    smm = d.features.get("smm")
    if "requires-smm" in features:
        if (smm is not None and smm.attrs.get("state") == "off") or lattrs.get("secure") == "no":
            return False
    elif lattrs.get("secure") == "yes":
        return False
    if device == "flash":
        mode = mapping.get("mode", "split")
        if lattrs.get("type") not in (None, "pflash"):
            return False
        if mode != ("stateless" if lattrs.get("stateless") == "yes" else "split"):
            return False
        if lattrs.get("readonly") == "no" and mode != "combined":
            return False  # a writable loader needs a combined build, which the mode check above never keeps
        fmt = (mapping.get("executable") or {}).get("format", "raw")
        # an existing definition keeps libvirt's historical raw images
        wanted = lattrs.get("format") or (None if NEW_DEFINITION.get() else "raw")
        if fmt not in ("raw", "qcow2") or (wanted is not None and fmt != wanted):
            return False
        if mode == "split" and (mapping.get("nvram-template") or {}).get("format", "raw") not in ("raw", "qcow2"):
            return False
    elif device == "memory" and (lattrs.get("type") not in (None, "rom") or lattrs.get("readonly") == "no"):
        return False
    ls = d.launch_security
    if ls is not None and ls.type == "sev":
        if "amd-sev" not in features:
            return False
        if int(ls.values.get("policy", "0"), 0) & _SEV_ES_POLICY and "amd-sev-es" not in features:
            return False
    return not (ls is not None and ls.type == "sev-snp" and "amd-sev-snp" not in features)


def select_descriptor(ctx: Ctx, lattrs: dict[str, str], code: str | None) -> dict[str, Any]:
    dirs = firmware_dirs()
    for _path, desc in load_descriptors(dirs):
        if _matches(ctx, desc, lattrs, code):
            return desc
    raise UnsupportedByQemu(
        f"operation failed: Unable to find '{ctx.domain.os.firmware}' firmware that is compatible with the current "
        f"configuration (<os firmware>: no firmware descriptor fits {ctx.arch}, {ctx.machine_name})",
        path=ctx.domain.source,
        hint=f"install the distribution's firmware package (ovmf, qemu-efi-aarch64) or point {ENV_FIRMWARE_DIRS} "
             f"at descriptor folders; searched: {', '.join(map(str, dirs))}")


def resolve_firmware(ctx: Ctx) -> Pflash | str | None:
    """The firmware libvirt would use: pflash images, a ROM path (-bios), or None (QEMU's default)."""
    d = ctx.domain
    loader = d.os.loader
    nvram = d.os.nvram
    lattrs = dict(loader.attrs) if loader is not None else {}
    if loader is not None and loader.path and "type" not in lattrs:
        lattrs["type"] = "rom"  # libvirt's default loader type
    if loader is None and nvram is not None and nvram.attrs.get("format"):
        lattrs["format"] = nvram.attrs["format"]  # <nvram format=X> alone asks for an X firmware build
    code = loader.path if loader is not None else None
    template_format = None
    template_path = nvram.attrs.get("template") if nvram is not None else None
    smm = False
    if d.os.firmware:
        ctx_loader = (lattrs, code)
        desc = select_descriptor(ctx, *ctx_loader)
        mapping = desc.get("mapping", {})
        if mapping.get("device") == "memory":
            return mapping.get("filename")
        if mapping.get("device") != "flash":
            return None  # a kernel as firmware
        executable = mapping.get("executable") or {}
        code = executable.get("filename")
        lattrs.update(type="pflash", readonly="yes", format=executable.get("format", "raw"))
        if mapping.get("mode", "split") == "split":
            template_format = (mapping.get("nvram-template") or {}).get("format") or lattrs["format"]
            template_path = (mapping.get("nvram-template") or {}).get("filename")
        if "requires-smm" in desc.get("features", []):
            smm = True
            lattrs["secure"] = "yes"
    if code and lattrs.get("type") == "rom":
        return code
    if not code or lattrs.get("type") != "pflash":
        return None
    code_format = lattrs.get("format", "raw")
    vars_path: str | None = None
    vars_format = code_format
    if nvram is not None and nvram.path:
        vars_path = nvram.path
        vars_format = nvram.attrs.get("format", code_format)
    elif lattrs.get("readonly") == "yes" and lattrs.get("stateless") != "yes":
        # an <nvram> without a source is replaced: the template's format, libvirt's path for it
        vars_format = template_format or code_format
        ext = ".qcow2" if vars_format == "qcow2" else ".raw" if NEW_DEFINITION.get() and (
            template_path or "").endswith(".raw") else ".fd"
        vars_path = f"{NVRAM_DIR}/{d.name}_VARS{ext}"
    return Pflash(code=code, code_format=code_format, code_readonly=lattrs.get("readonly") == "yes",
                  vars=vars_path, vars_format=vars_format, secure=lattrs.get("secure") == "yes", smm=smm)
