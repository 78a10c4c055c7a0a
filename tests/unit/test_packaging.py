"""The package carries its data: pyproject lists every subpackage and the data folders; the data layers.

The wheel itself, installed into a fresh virtualenv outside the checkout, is tested in
tests/integration/test_wheel.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from conformance import data
from conformance.errors import ConformanceError
from tests.helpers import ROOT


def test_pyproject_lists_every_subpackage_and_the_data_folders() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "conformance").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"] == {"conformance._data.capsdata": "capsdata",
                                     "conformance._data.templates": "templates"}
    # every data file of the checkout matches a package-data pattern
    patterns = config["package-data"]
    for folder, package in (("capsdata", "conformance._data.capsdata"), ("templates", "conformance._data.templates")):
        files = [p.relative_to(ROOT / folder) for p in (ROOT / folder).rglob("*") if p.is_file()]
        assert files
        unmatched = [f for f in files if not any(f.match(pat) for pat in patterns[package])]
        assert not unmatched, f"{folder}: not in the wheel: {unmatched}"


def test_a_checkout_reads_its_files_in_place() -> None:
    base = data.base_layer()
    assert base.name == "checkout" and base.root == ROOT
    assert base.bugs == ROOT / "conformance" / "knownbugs" / "bugs.toml"
    assert data.package_file("report", "report.html.j2") == ROOT / "conformance" / "report" / "report.html.j2"


def test_no_data_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(data, "PACKAGE_DIR", tmp_path / "site" / "conformance")
    monkeypatch.setattr(data, "package_file", lambda *parts: tmp_path.joinpath("site", "conformance", *parts))
    data.base_layer.cache_clear()
    try:
        with pytest.raises(data.DataError) as err:
            data.base_layer()
        assert "no data found" in str(err.value) and "\n" not in str(err.value)
        assert isinstance(err.value, ConformanceError)
    finally:
        data.base_layer.cache_clear()


def test_user_layers_order_and_bad_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    (one / "capsdata").mkdir(parents=True)
    (two / "templates").mkdir(parents=True)
    (two / "templates" / "cases.toml").write_text("")
    monkeypatch.setenv("QEMU_CONFORMANCE_DATA", str(one))
    data.set_user_dirs([two])
    try:
        assert [layer.name for layer in data.layers()] == ["checkout", str(one), str(two)]
        assert data.layer_of(one / "capsdata" / "x.xml") == str(one)
        assert data.layer_of(ROOT / "capsdata" / "x.xml") == "checkout"
        with pytest.raises(data.DataError, match="data folder not found"):
            data.set_user_dirs([tmp_path / "none"])
        (tmp_path / "empty").mkdir()
        with pytest.raises(data.DataError, match="holds none of"):
            data.set_user_dirs([tmp_path / "empty"])
    finally:
        data.set_user_dirs([])


def test_data_option_anywhere_on_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import _data_options, main

    assert _data_options(["--data", "a", "run", "--data=b", "--cases", "x"]) == (["run", "--cases", "x"], ["a", "b"])
    (tmp_path / "capsdata").mkdir()
    fixture = (ROOT / "capsdata" / "qemu-7.2.22-x86_64.xml").read_text()
    (tmp_path / "capsdata" / "qemu-7.2.99-x86_64.xml").write_text(fixture.replace('micro="22"', 'micro="99"', 1))
    try:
        for argv in (["--data", str(tmp_path), "caps", "list"], ["caps", "list", f"--data={tmp_path}"]):
            assert main(argv) == 0
            assert f"qemu-7.2.99-x86_64.xml ({tmp_path})" in capsys.readouterr().out
        assert main(["caps", "list", "--data", str(tmp_path / "none")]) == 2
        assert "data folder not found" in capsys.readouterr().err
    finally:
        data.set_user_dirs([])
