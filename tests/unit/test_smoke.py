"""The live smoke set: `smoke = true` in cases.toml (checked by the loader), and which boots and migrations
the pytest plugin marks ``smoke`` (conformance/pytest_plugin.py); no QEMU is started."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conformance.cases import load_catalogue
from conformance.errors import CaseError
from conformance.plan import plan
from conformance.pytest_plugin import _smoke_migrations
from tests.helpers import ROOT

SMALL = """\
[cases.smoky]
template = "minimal.xml.j2"
description = "in the smoke set"
targets = ["x86_64:q35"]
stages = ["parse", "argv", "boot", "migrate"]
smoke = true

[cases.plain]
template = "minimal.xml.j2"
description = "not in it"
targets = ["x86_64:q35"]
stages = ["parse", "argv", "boot", "migrate"]
"""


def _load(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "cases.toml"
    path.write_text(text)
    return load_catalogue(path).cases


def test_smoke_is_a_boolean_of_the_case(tmp_path: Path) -> None:
    cases = _load(tmp_path, SMALL)
    assert cases["smoky"].smoke and not cases["plain"].smoke
    with pytest.raises(CaseError, match=r"case smoky: smoke = 'yes' is not a boolean") as info:
        _load(tmp_path / "..", SMALL.replace("smoke = true", 'smoke = "yes"'))
    assert "cases.toml:1" in str(info.value)  # the file and the case's line


def _migrations(cases: list, builds: list[str], machines: list[str] | None = None) -> list[str]:
    planned = [p for p in plan(cases, builds, ["migrate"], lambda b: (b, "x86_64"),
                               machines=(lambda c, s, d: machines) if machines else None) if p.peer is not None]
    return [p.item.id for i, p in enumerate(planned) if i in _smoke_migrations(planned)]


def test_smoke_migrations_are_a_build_to_itself_and_one_cross_build_pair_with_10_0(tmp_path: Path) -> None:
    cases = list(_load(tmp_path, SMALL).values())
    assert _migrations(cases, ["7.2.22-x86_64"]) == ["smoky.migrate[7.2.22-x86_64->7.2.22-x86_64]"]
    three = ["7.2.22-x86_64", "10.0.2-x86_64", "5.2.0-x86_64"]
    chosen = _migrations(cases, three)
    assert sorted(chosen) == sorted([f"smoky.migrate[{b}->{b}]" for b in three]
                                    + ["smoky.migrate[7.2.22-x86_64->10.0.2-x86_64]"])
    assert _migrations(cases, ["7.2.22-x86_64", "5.2.0-x86_64"]) == [  # no 10.0: no cross-build pair
        "smoky.migrate[7.2.22-x86_64->7.2.22-x86_64]", "smoky.migrate[5.2.0-x86_64->5.2.0-x86_64]"]
    # under several machine types a pair is smoke under one of them only
    per_machine = _migrations(cases, ["7.2.22-x86_64"], machines=["pc-q35-7.2", "pc-q35-7.1"])
    assert per_machine == ["smoky.migrate[7.2.22-x86_64->7.2.22-x86_64@pc-q35-7.2]"]


# sections of cases.toml that need no smoke case of their own, and why
WITHOUT_SMOKE = {
    "device-rich x86_64 cases": "device coverage, not a feature: each boot takes about a minute under TCG on "
                                "2 busy cores; virt-net-usb-rich stands for the device-rich cases",
}


def test_the_catalogue_has_one_smoke_case_per_section_that_boots() -> None:
    """Each `# --- SECTION` of cases.toml with a case that boots has a smoke case: one case per feature."""
    text = (ROOT / "templates" / "cases.toml").read_text()
    cases = load_catalogue().cases
    sections = re.split(r"\n# --- ", text)[1:]
    for section in sections:
        if section.startswith(tuple(WITHOUT_SMOKE)):
            continue
        names = re.findall(r"^\[cases\.([\w-]+)\]$", section, re.M)
        booting = [n for n in names if "boot" in cases[n].stages]
        if booting:
            assert any(cases[n].smoke for n in booting), (section.splitlines()[0], booting)
    smoke = [c for c in cases.values() if c.smoke]
    assert all("boot" in c.stages for c in smoke)
    assert {a for c in smoke for a in c.arches} == {"x86_64", "aarch64"}
    assert len(smoke) <= 12, "the smoke set is a few minutes: one case per feature"
