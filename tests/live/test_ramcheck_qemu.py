"""The RAM comparison (conformance/live/ramcheck.py) on real QEMUs, without a guest: two paused QEMUs of one
binary whose RAM differs where a generic loader (``-device loader,data=...``) wrote a word into one of them
only. Read from each QEMU's memory (process_vm_readv) and by pmemsave, the comparison finds that page and
no other, keeps the same evidence, and records which way it read. On the host's QEMUs and each prepared
build (5.2, 10.0), x86_64 and aarch64. The pure parts: tests/unit/test_ramcheck.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conformance import builds
from conformance.builds import KNOWN_BUILDS
from conformance.live import ramcheck
from conformance.live.ramcheck import PAGE, FastPathUnavailable, RamComparison, compare_ram, ram_region_names
from conformance.qemu.process import QemuProcess

pytestmark = pytest.mark.live

MACHINE = {"x86_64": ["-machine", "q35"], "aarch64": ["-machine", "virt", "-cpu", "cortex-a57"]}
RAM_AT = {"x86_64": 0, "aarch64": 0x40000000}  # where guest RAM starts
# virt writes its device tree at the start of RAM, with random seeds (kaslr-seed, rng-seed) of each QEMU's own
DTB = {"x86_64": 0, "aarch64": 1 << 20}
BINARIES = [("host", "x86_64"), ("host", "aarch64"),
            *((name, arch) for name, spec in KNOWN_BUILDS.items() for arch in spec.arches)]
SAME, LOST = 0x200000, 0x4321010  # offsets in guest RAM: a word both sides hold, a word only the source holds


def _binary(build: str, arch: str) -> Path:
    if build == "host":
        found = shutil.which(f"qemu-system-{arch}")
        if not found:
            pytest.skip(f"qemu-system-{arch} not installed")
        return Path(found)
    wrapper = builds.find_qemu(build, arch)
    if wrapper is None:
        pytest.skip(f"QEMU {build} build not prepared: run `qemu-conformance builds fetch {build}`")
    return wrapper


def _paused(binary: Path, arch: str, folder: Path, words: dict[int, int]) -> QemuProcess:
    """A QEMU that never runs a CPU, 256 MiB of RAM, ``words`` (guest-physical address: value) written at reset."""
    args = [*MACHINE[arch], "-accel", "tcg", "-m", "256", "-S", "-nodefaults", "-display", "none"]
    for addr, value in words.items():
        args += ["-device", f"loader,data={value:#x},data-len=4,addr={addr:#x}"]
    return QemuProcess(binary, args, folder, name=folder.name)


def _check(found: RamComparison, folder: Path, page: int, offset: int, dtb: tuple[int, int] = (0, 0)) -> None:
    """One differing page (besides the device tree, ``dtb``: start, size), the loader's word in the
    source's copy only, both copies kept as evidence."""
    assert found.note == "" and found.explained == [], found.record()
    assert [p for p in found.differing if not dtb[0] <= p < sum(dtb)] == [page], found.record()
    assert found.compared > 250 << 20, found.record()
    failure = found.verdict().failure
    assert failure.startswith("destination RAM differs from the source's at the switch: ") and hex(page) in failure
    kept = folder / "ram-differs"
    source, destination = (kept / f"{page:#x}.source").read_bytes(), (kept / f"{page:#x}.destination").read_bytes()
    assert source[offset:offset + 4] == (0x12345678).to_bytes(4, "little") and destination == bytes(PAGE)
    shutil.rmtree(kept)


@pytest.mark.parametrize(("build", "arch"), BINARIES, ids=[f"{b}-{a}" for b, a in BINARIES])
def test_both_ways_of_reading_find_the_one_page_that_differs(build: str, arch: str, tmp_path: Path) -> None:
    binary = _binary(build, arch)
    base = RAM_AT[arch]
    with _paused(binary, arch, tmp_path / "source", {base + SAME: 0x5A5A5A5A, base + LOST: 0x12345678}) as src, \
            _paused(binary, arch, tmp_path / "destination", {base + SAME: 0x5A5A5A5A}) as dst:
        source, destination = SimpleNamespace(process=src), SimpleNamespace(process=dst)
        names = ram_region_names(dst.argv)
        page, offset = (base + LOST) & ~(PAGE - 1), LOST % PAGE
        fast = compare_ram(source, destination, names)
        if fast.method != "process_vm_readv":
            pytest.skip(f"QEMU's memory cannot be read here: {fast.why_pmemsave}")
        _check(fast, dst.workdir, page, offset, (base, DTB[arch]))
        slow = compare_ram(source, destination, names, fast=False)
        assert slow.record()["method"] == "pmemsave" and slow.record()["pmemsave_because"] == "asked for (fast=False)"
        _check(slow, dst.workdir, page, offset, (base, DTB[arch]))
        assert (slow.compared, slow.differing) == (fast.compared, fast.differing)
        equal = compare_ram(destination, destination, names)
        assert equal.differing == [] and equal.method == "process_vm_readv"
        assert equal.verdict().check == f"RAM: the destination's {fast.compared >> 20} MiB equal the source's"
        assert not list(src.workdir.glob("ram-*.bin")) and not list(dst.workdir.glob("ram-*.bin"))  # dumps gone


def test_a_refused_read_falls_back_to_pmemsave_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _binary("host", "x86_64")

    def refused(pid: int, address: int, *_: object) -> None:
        raise FastPathUnavailable(f"process_vm_readv of QEMU {pid} at {address:#x}: Operation not permitted")

    monkeypatch.setattr(ramcheck, "_read_process", refused)
    with _paused(binary, "x86_64", tmp_path / "source", {LOST: 0x12345678}) as src, \
            _paused(binary, "x86_64", tmp_path / "destination", {}) as dst:
        found = compare_ram(SimpleNamespace(process=src), SimpleNamespace(process=dst), ram_region_names(dst.argv))
        assert found.method == "pmemsave" and found.why_pmemsave.endswith("Operation not permitted"), found.record()
        _check(found, dst.workdir, LOST & ~(PAGE - 1), LOST % PAGE)
