"""Every -netdev/-blockdev/-chardev/-object the argv builder writes for the catalogue passes the QAPI schema
check (conformance/argv/qapi_check.py) on every stored fixture, as libvirt's own argv pass its test's."""

from __future__ import annotations

import itertools
from collections import Counter

from conformance.argv.qapi_check import OPTIONS, qapi_problems
from conformance.caps.store import fixture_files, load
from conformance.cases import load_catalogue
from conformance.static import StaticRunner


def test_the_catalogue_passes_the_qapi_schema_on_every_fixture() -> None:
    catalogue = load_catalogue()
    runner = StaticRunner(catalogue)
    fixtures = [load(p) for p in fixture_files()]
    assert fixtures and all(caps.qapi_schema for caps in fixtures)  # every stored fixture records the schema
    checked: Counter[tuple[str, str]] = Counter()
    failing = {}
    for caps in fixtures:
        for case in catalogue.cases.values():
            if caps.arch not in case.arches:
                continue
            for outcome in runner.run(case, caps):
                for opt, value in itertools.pairwise(outcome.argv or []):
                    if opt not in OPTIONS:
                        continue
                    problems = qapi_problems(opt, value, caps)
                    if problems is None:
                        continue
                    checked[opt, caps.label] += 1
                    if problems:
                        failing.setdefault((case.name, caps.label), problems[0])
    assert failing == {}
    assert {opt for opt, _ in checked} == set(OPTIONS)
    # every fixture had options checked; every x86_64 one its -blockdev; -object from 6.0 (object-add's union)
    assert {label for _, label in checked} == {c.label for c in fixtures}
    assert {label for opt, label in checked if opt == "-blockdev"} >= {c.label for c in fixtures
                                                                        if c.arch == "x86_64"}
    assert {label for opt, label in checked if opt == "-object"} == {c.label for c in fixtures
                                                                      if c.version.major >= 6}


def test_a_case_whose_own_qemu_args_the_qemu_lacks_is_skipped_saying_why() -> None:
    """virt-storage-rich's qemu_args give null-co 'read-zeroes', which QEMU 4.0 lacks (libvirt's 4.0.0 replies):
    QEMU would refuse the command line, so the case is planned as a skip there, naming the member."""
    from conformance.caps.store import resolve
    from conformance.cases import plan

    case = load_catalogue().cases["virt-storage-rich"]
    old = plan(case, resolve("4.0.0:aarch64"))
    assert not old.run and old.skip_reason == ("the case's qemu_args need what this QEMU lacks: "
                                               "-blockdev null-co: QEMU 4.0.0 has no property 'read-zeroes'")
    assert plan(case, resolve("4.2.0:aarch64")).run
