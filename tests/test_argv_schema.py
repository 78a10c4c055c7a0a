"""argv against the fixture's QEMU (conformance/argv/schema_check.py): a property the QEMU lacks, or of
another type, is named; what a fixture does not record is not judged; the static stage fails on it."""

from __future__ import annotations

import dataclasses
import json

from conformance.argv.schema_check import property_problems
from conformance.caps.store import resolve


def test_unknown_and_mistyped_properties_are_named() -> None:
    caps = resolve("7.2.22:x86_64")  # probed: the properties of the types the suite builds
    argv = ["qemu", "-device", json.dumps({"driver": "virtio-net-pci", "id": "net0", "failover": True,
                                           "bogus": 1, "mq": 5}),
            "-device", "e1000,mac=52:54:00:00:00:01,nope=1", "-object", '{"qom-type":"iothread","id":"i"}']
    assert property_problems(argv, caps) == [
        "-device virtio-net-pci: QEMU 7.2.22 has no property 'bogus'",
        "-device virtio-net-pci: property 'mq' is bool in QEMU 7.2.22, the argv gives 5",
        "-device e1000: QEMU 7.2.22 has no property 'nope'",
    ]


def test_what_the_fixture_does_not_record_is_not_judged() -> None:
    imported = resolve("7.2.0:x86_64")  # libvirt's file: only the properties behind its flags
    argv = ["qemu", "-device", '{"driver":"virtio-net-pci","id":"n","anything":true}',
            "-device", '{"driver":"virtio-net-pci","id":"m","rss":true}']
    assert property_problems(argv, imported) == []
    assert property_problems(["qemu", "-device", '{"driver":"usb-tablet","x":1}'], resolve("7.2.22:x86_64")) == []


def test_the_static_stage_fails_on_a_property_the_qemu_lacks() -> None:
    from conformance.cases import load_catalogue
    from conformance.static import StaticRunner

    caps = resolve("7.2.22:x86_64")
    props = {t: dict(p) for t, p in caps.type_properties.items()}
    props["virtio-net-pci"].pop("mac")  # as if this QEMU's virtio-net-pci had no 'mac' property
    lacking = dataclasses.replace(caps, type_properties=props)
    catalogue = load_catalogue()
    case = next(c for c in catalogue.cases.values() if "x86_64" in c.arches and "virtio-net.failover" in c.needs)
    outcomes = {o.stage: o for o in StaticRunner(catalogue).run(case, lacking)}
    assert outcomes["argv"].verdict == "fail"
    assert "virtio-net-pci: QEMU 7.2.22 has no property 'mac'" in outcomes["argv"].reason
