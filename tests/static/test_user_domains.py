"""Users' own domains (run --domain) through the static stages on stored fixtures: virt-install's domains
(tests/data/domains/) and a handful of libvirt's corpus, read in place. No QEMU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.caps.store import resolve
from conformance.domain.user import load_domain
from conformance.pipeline import domain_argv, parse_xml
from conformance.runner import run_stages
from tests.helpers import DATA

DOMAINS = DATA / "domains"
VIRT_INSTALL = sorted(DOMAINS.glob("*.xml"))
FIXTURES = ["7.2:x86_64", "10.0:x86_64", "7.2:aarch64", "10.0:aarch64"]

# (domain, stage, QEMU major.minor) -> (verdict, a part of the reason); a domain not listed passes both stages
EXPECTED = {
    # QXL is in Debian's qemu-system-modules-spice, which the prepared 10.0 build leaves out (builds.py)
    **{(name, "argv", "10.0"): ("fail", "no device type 'qxl-vga'")
       for name in ("alpine-qemu", "ubuntu22-scsi-hostdev-kvm", "win10-sata-e1000e-kvm")},
    # virt-install wrote ACPI without UEFI (no AAVMF installed): libvirt refuses that on aarch64
    **{("debian11-aarch64-no-firmware", "parse", v): ("error", "ACPI requires UEFI") for v in ("7.2", "10.0")},
    **{("debian11-aarch64-no-firmware", "argv", v): ("skip", "parse stage failed") for v in ("7.2", "10.0")},
    # the suite's argv builder writes tpm-tis on aarch64 where libvirt writes the sysbus tpm-tis-device
    **{("debian11-aarch64-tpm", "argv", v): ("fail", "no device type 'tpm-tis'") for v in ("7.2", "10.0")},
}


def results(folder: Path) -> dict[tuple[str, str, str, str], dict]:
    found = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        version = ".".join(record["qemu"]["version"].split(".")[:2]) if record.get("qemu") else ""
        found[(record["case"], record["stage"], version, record["arch"])] = record
    return found


@pytest.fixture(scope="module")
def virt_install_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("domains")
    code = run_stages(["parse", "argv"], [], [], out, lambda _line: None, fixtures=FIXTURES, domains=VIRT_INSTALL)
    assert code == 1  # the failures EXPECTED lists
    return results(out)


def test_every_virt_install_domain_gets_both_stages_on_each_fixture_of_its_arch(virt_install_run: dict) -> None:
    for path in VIRT_INSTALL:
        arch = load_domain(path).arch
        for version in ("7.2", "10.0"):
            for stage in ("parse", "argv"):
                record = virt_install_run[(path.stem, stage, version, arch)]
                verdict, why = EXPECTED.get((path.stem, stage, version), ("pass", ""))
                assert (record["verdict"], why in record["reason"]) == (verdict, True), (path.stem, stage, version,
                                                                                       record["reason"])
                assert record["details"]["domain"] == str(path)
    assert len(virt_install_run) == len(VIRT_INSTALL) * 2 * 2  # no x86_64 domain on aarch64 fixtures, or back


def test_the_static_stages_keep_the_domain_as_written(virt_install_run: dict) -> None:
    """host-passthrough, KVM and the domain's own networking are what the static argv says."""
    argv = virt_install_run[("debian11-q35-kvm", "argv", "7.2", "x86_64")]["details"]["argv"]
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1].startswith("host")
    assert any(a.startswith("-spice") for a in argv)


@pytest.mark.parametrize("path", [p for p in VIRT_INSTALL if "no-firmware" not in p.name and "-tpm" not in p.name],
                         ids=lambda p: p.stem)
def test_the_adapted_domain_builds_the_argv_that_boots_here(path: Path) -> None:
    """What the live stages start: TCG, -cpu max for a host CPU, the disks in the VM folder on their own bus,
    user netdevs, headless. (Domains with a TPM or a hostdev never get here: their live stages skip.)"""
    user = load_domain(path)
    caps = resolve(f"7.2:{user.arch}")
    adapted = user.adapt(emulator="/usr/bin/qemu-system-" + user.arch, machine=user.machine,
                         image_dir="/srv/vm", domain_type="qemu")
    if adapted.blockers:
        assert path.stem == "ubuntu22-scsi-hostdev-kvm"
        return
    domain, _ = parse_xml(adapted.xml, path.name)
    argv = domain_argv(domain, caps)
    joined = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "tcg"
    if "host-passthrough" in user.text.decode():
        assert argv[argv.index("-cpu") + 1] == "max"
    assert "/srv/vm/" in joined and "/tmp/c2home/images" not in joined
    assert '"type":"user"' in joined or "user," in joined
    assert "-spice" not in argv and "-vnc" not in argv


# libvirt's corpus (../shared/peer/libvirt-corpus-wide): (case, stage, version) -> (verdict, part of the reason)
CORPUS = ("q35-virt-manager-basic", "cpu-host-passthrough", "net-user", "graphics-spice-usb-redir",
          "machine-aliases1", "net-virtio-teaming-hostdev", "disk-cache", "luks-disks-source-both",
          "x86-kvm-32-on-64")
CORPUS_EXPECTED = {
    ("q35-virt-manager-basic", "argv", "10.0"): ("fail", "no device type 'qxl-vga'"),
    **{("luks-disks-source-both", s, "10.0"): ("skip", "has no machine type pc-i440fx-2.1") for s in ("parse", "argv")},
    # two <encryption> definitions for one image: refused as libvirt refuses it (storage_source.encryption_of)
    ("luks-disks-source-both", "argv", "7.2"): ("fail", "an <encryption> definition already found for disk source"),
    **{("x86-kvm-32-on-64", s, ""): ("skip", "the domain is i686, and no i686 build is under test")
       for s in ("parse", "argv")},
}


def test_corpus_domains_through_the_static_stages(corpus: Path, tmp_path: Path) -> None:
    files = [corpus / "cases" / name / f"{name}.xml" for name in CORPUS]
    missing = [f for f in files if not f.exists()]
    if missing:
        pytest.skip(f"not in this corpus: {', '.join(f.name for f in missing)}")
    run_stages(["parse", "argv"], [], [], tmp_path, lambda _line: None, fixtures=["7.2:x86_64", "10.0:x86_64"],
               domains=files)
    found = {(case, stage, version): record for (case, stage, version, _), record in results(tmp_path).items()}
    for name in CORPUS:
        for version in ("7.2", "10.0") if name != "x86-kvm-32-on-64" else ("",):
            for stage in ("parse", "argv"):
                verdict, why = CORPUS_EXPECTED.get((name, stage, version), ("pass", ""))
                record = found[(name, stage, version)]
                assert (record["verdict"], why in record["reason"]) == (verdict, True), (name, stage, version,
                                                                                       record["reason"])
    assert len(found) == (len(CORPUS) - 1) * 2 * 2 + 2
