"""A guest that travels: `guest export` -> `guest import` round trip, hash checks, and cached .debs by hash.

Uses the test guests already built in this machine's cache (scripts/setup.sh builds them); starts no QEMU.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conformance.errors import GuestBuildError
from conformance.live import guest as guest_mod
from conformance.live.guest import build_guest, cached_flavours, export_guests, import_guests
from tests.helpers import code_under_test

pytestmark = pytest.mark.skipif(not cached_flavours(), reason="no test guest in the cache (scripts/setup.sh builds it)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("export") / "guest.tar"
    export_guests(target)
    return target


def test_round_trip_fills_a_cache_that_then_needs_no_apt(exported: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / "guest"
    imported = import_guests(exported, cache=cache)
    assert {(g.arch, g.flavour) for g in imported} == set(cached_flavours())
    own = {(g.arch, g.flavour): g for g in (build_guest(g.arch, flavour=g.flavour) for g in imported)}

    def no_apt(*_args: object, **_kwargs: object) -> None:
        raise GuestBuildError("apt-get not found")

    monkeypatch.setattr(guest_mod, "_debian_debs", no_apt)
    for original in imported:
        again = build_guest(original.arch, cache=cache, flavour=original.flavour)
        here = own[original.arch, original.flavour]  # the exporting cache's own
        assert again.key == here.key == original.key
        assert again.folder.parent == cache
        assert again.kernel.read_bytes() == here.kernel.read_bytes()
        assert again.initrd.read_bytes() == here.initrd.read_bytes()


def test_a_damaged_tarball_is_refused_on_one_line(exported: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(exported) as src, tarfile.open(damaged, "w") as dst:
        for member in src.getmembers():
            blob = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("initrd.img") and "generic" not in member.name:
                blob = blob[:-1] + bytes([blob[-1] ^ 1])
            dst.addfile(member, io.BytesIO(blob))
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "guest", "import", str(damaged)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**code_under_test(), "QEMU_CONFORMANCE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr
    assert "initrd.img: SHA-256" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "cache" / "guest").glob("*-*/initrd.img"))  # nothing half-imported


def test_an_imported_guest_of_another_recipe_is_not_used(exported: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "guest"
    first = import_guests(exported, cache=cache)[0]
    record = cache / f"imported-{first.arch}-{first.flavour}.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "recipe": "0" * 16}))
    seen: list[str] = []

    def no_apt(*_args: object, **_kwargs: object) -> None:
        raise GuestBuildError("apt-get not found")

    monkeypatch.setattr(guest_mod, "_debian_debs", no_apt)
    with pytest.raises(GuestBuildError, match="apt-get not found"):
        build_guest(first.arch, cache=cache, flavour=first.flavour, log=seen.append)
    assert any("another version of the suite" in line for line in seen)


def test_a_cached_deb_is_checked_by_its_hash_not_its_size(tmp_path: Path) -> None:
    debdir = tmp_path / "debs" / "amd64"
    debdir.mkdir(parents=True)
    good = debdir / "busybox-static_1_amd64.deb"
    good.write_bytes(b"the real package")
    from conformance.live.guest import _sha256_file

    record = tmp_path / "sources-amd64.json"
    record.write_text(json.dumps({"busybox": {"package": "busybox-static", "version": "1", "sha256":
                                              _sha256_file(good), "file": good.name}}))
    assert "busybox" in guest_mod._read_record(record, debdir)
    fake = debdir / "fake.part"
    fake.write_bytes(b"the fake package")  # same size, other content, put in place as a download would be
    fake.rename(good)
    assert guest_mod._read_record(record, debdir) == {}
    assert json.loads((debdir / ".sha256.json").read_text())[good.name][3] == _sha256_file(good)  # hashed again
