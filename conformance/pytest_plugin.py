"""pytest plugin (registered through the pytest11 entry point).

Parametrisation: a test that asks for ``static_combo`` runs once per case x
capability fixture of that case's arch, with readable ids such as
``teaming-q35[4.2.0-x86_64]``. Options narrow it down:

    --conformance-cases GLOB   only these cases (repeatable)
    --conformance-caps GLOB    only fixtures whose file name matches (repeatable)

Process hygiene: every pytest process, xdist workers included, dies with its
parent (PR_SET_PDEATHSIG), and every QEMU dies with the process that started
it, so killing a run leaves no QEMU behind.

Markers: ``live`` (starts real QEMU guests), ``slow``.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qemu-conformance")
    group.addoption("--conformance-cases", action="append", default=[], metavar="GLOB",
                    help="run only the cases matching GLOB (repeatable)")
    group.addoption("--conformance-caps", action="append", default=[], metavar="GLOB",
                    help="use only the capsdata/ fixtures whose file name matches GLOB (repeatable)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: boots real QEMU guests (seconds each)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from conformance.live.process import die_with_parent_self

        die_with_parent_self()


@dataclass(frozen=True)
class StaticCombo:
    """One case on one capability fixture."""

    case_name: str
    fixture: Path

    def run(self) -> list:
        from conformance.caps.store import load

        return _static_runner().run(_catalogue().get(self.case_name), load(self.fixture))


@functools.cache
def _static_runner():
    """One StaticRunner per process, so render/parse are shared by the fixtures of a case."""
    from conformance.static import StaticRunner

    return StaticRunner(_catalogue())


def _catalogue():
    from conformance.cases import load_catalogue

    return load_catalogue()


def _matches(name: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def static_combos(case_globs: list[str], caps_globs: list[str]) -> list[tuple[str, StaticCombo]]:
    from conformance.caps.store import fixture_files, load

    fixtures = [(p, load(p)) for p in fixture_files() if _matches(p.name, caps_globs)]
    combos = []
    for case in _catalogue().cases.values():
        if not _matches(case.name, case_globs):
            continue
        for path, caps in fixtures:
            if caps.arch in case.arches:
                combos.append((f"{case.name}[{caps.version}-{caps.arch}]", StaticCombo(case.name, path)))
    return combos


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "static_combo" in metafunc.fixturenames:
        opts = metafunc.config.option
        combos = static_combos(opts.conformance_cases, opts.conformance_caps)
        metafunc.parametrize("static_combo", [c for _, c in combos], ids=[i for i, _ in combos])
