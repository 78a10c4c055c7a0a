"""The device layout reused across fixtures (conformance/argv/layout_memo.py, what the static stages use) gives
the argvs and errors each fixture gives without it. No QEMU."""

from __future__ import annotations

import dataclasses

import pytest

from conformance.argv.layout_memo import LAYOUTS, LayoutMemo
from conformance.caps.store import fixture_files, load
from conformance.cases import load_catalogue, plan
from conformance.errors import ConformanceError
from conformance.pipeline import domain_argv
from conformance.static import StaticRunner

CASES = ("q35-minimal", "pc-minimal", "virt-minimal", "q35-storage-rich", "pc-nic-rich", "virt-misc-rich",
         "teaming-q35")


def _argv(domain, caps) -> list[str] | str:
    try:
        return domain_argv(domain, caps, checked=True)
    except ConformanceError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_a_reused_layout_gives_the_argv_built_without_it() -> None:
    catalogue = load_catalogue()
    fixtures = [load(p) for p in fixture_files()]
    runner = StaticRunner(catalogue)
    memo = LayoutMemo()
    compared = 0
    for name in CASES:
        case = catalogue.get(name)
        for caps in fixtures:
            if caps.arch not in case.arches:
                continue
            what = plan(case, caps)
            if not what.run:
                continue
            rendered = runner.prepare(case, caps, what.machine or "")
            if rendered.domain is None or rendered.refused is not None:
                continue
            token = LAYOUTS.set(memo)
            try:
                reused = _argv(rendered.domain, caps)
            finally:
                LAYOUTS.reset(token)
            assert reused == _argv(rendered.domain, caps), f"{name} on {caps.label}"
            compared += 1
    assert compared > 40
    assert memo.reused > compared // 2, "most builds reuse a layout"
    assert memo.built >= len(CASES), "each domain's first build lays it out"


def test_different_answers_lay_the_domain_out_again() -> None:
    catalogue = load_catalogue()
    caps = next(load(p) for p in fixture_files() if p.name == "qemu-10.0.2-x86_64.xml")
    case = catalogue.get("q35-minimal")
    rendered = StaticRunner(catalogue).prepare(case, caps, "q35")
    memo = LayoutMemo()
    other = dataclasses.replace(caps, qom_types=caps.qom_types - {"pcie-pci-bridge"})
    if caps.has("pcie-pci-bridge") == other.has("pcie-pci-bridge"):
        pytest.skip("pcie-pci-bridge is not a QOM-type flag of this fixture")
    token = LAYOUTS.set(memo)
    try:
        first, second, again = (_argv(rendered.domain, c) for c in (caps, other, caps))
    finally:
        LAYOUTS.reset(token)
    assert (memo.built, memo.reused) == (2, 1), "PCI assignment reads pcie-pci-bridge: two layouts"
    assert isinstance(first, list) and first == again == _argv(rendered.domain, caps)
    assert second == _argv(rendered.domain, other)
