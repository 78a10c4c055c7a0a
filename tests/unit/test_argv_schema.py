"""argv against the fixture's QEMU (conformance/argv/schema_check.py): a property or QAPI member the QEMU
lacks, or of another type, is named; what a fixture does not record is not judged; the static stage fails on
it."""

from __future__ import annotations

import dataclasses
import itertools
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


# --- -netdev / -blockdev / -chardev against the QAPI unions the probe records --------------------------------


def test_every_catalogue_case_passes_the_probed_unions() -> None:
    """The builder's -netdev/-blockdev/-chardev for every case on every probed fixture: each value's type is
    in the union and every member is, with its JSON type (and the check did look at them)."""
    from conformance.argv.schema_check import member_problems
    from conformance.caps.store import fixture_files, load
    from conformance.cases import load_catalogue
    from conformance.static import StaticRunner

    catalogue = load_catalogue()
    runner = StaticRunner(catalogue)
    probed = [c for c in map(load, fixture_files()) if c.provenance.source == "probe"]
    assert len(probed) >= 4 and all(set(c.option_members) == {"netdev", "blockdev", "chardev"} for c in probed)
    seen: set[tuple[str, str]] = set()
    for caps in probed:
        for case in catalogue.cases.values():
            if caps.arch not in case.arches:
                continue
            for outcome in runner.run(case, caps):
                argv = outcome.argv or []
                for opt, value in itertools.pairwise(argv):
                    if opt in ("-netdev", "-blockdev", "-chardev"):
                        assert member_problems(opt, value, caps) == [], (case.name, caps.label, value)
                        seen.add((opt, caps.label))
    assert {opt for opt, _ in seen} == {"-netdev", "-blockdev", "-chardev"}
    assert {label for _, label in seen} == {c.label for c in probed}


def test_members_a_qemu_lacks_are_named() -> None:
    """Genuine differences of the real schemas: 10.0 has them, 7.2 has not."""
    old, new = resolve("7.2.22:x86_64"), resolve("10.0.2:x86_64")
    stream = json.dumps({"type": "stream", "id": "n0", "server": False,
                         "addr": {"type": "unix", "path": "/run/n0.sock"}, "reconnect-ms": 1000})
    qcow2 = json.dumps({"node-name": "f", "driver": "qcow2", "discard-no-unref": True, "file": "s"})
    argv = ["qemu", "-netdev", stream, "-blockdev", qcow2, "-chardev", "socket,id=c0,path=/run/c0,reconnect-ms=500",
            "-chardev", "hub,id=h0,chardevs.0=c0"]
    assert property_problems(argv, new) == []
    assert property_problems(argv, old) == [
        "-netdev stream: QEMU 7.2.22 has no property 'reconnect-ms'",
        "-blockdev qcow2: QEMU 7.2.22 has no property 'discard-no-unref'",
        "-chardev socket: QEMU 7.2.22 has no property 'reconnect-ms'",
        "-chardev hub: QEMU 7.2.22 has no chardev backend 'hub'",
    ]


def test_member_types_nested_objects_and_json_chardev() -> None:
    caps = resolve("10.0.2:x86_64")
    argv = ["qemu",
            "-blockdev", json.dumps({"driver": "file", "filename": "/x", "node-name": "s", "read-only": "yes",
                                     "cache": {"direct": True, "bogus": False}}),
            "-netdev", json.dumps({"type": "tap", "id": "n", "fd": 3, "vhost": True}),
            "-netdev", json.dumps({"type": "nosuch", "id": "m"}),
            "-chardev", json.dumps({"id": "c", "backend": {"type": "socket", "data": {
                "addr": {"type": "fd", "data": {"str": "3"}}, "server": True, "wait": "no", "nope": 1}}}),
            "-netdev", "user,id=u,hostname=guest,nothing=1",
            "-blockdev", "driver=raw,node-name=f,file=s,cache.direct=on,cache.nope=on"]
    assert property_problems(argv, caps) == [
        "-blockdev file: property 'read-only' is boolean in QEMU 10.0.2, the argv gives 'yes'",
        "-blockdev file: QEMU 10.0.2 has no property 'cache.bogus'",
        "-netdev tap: property 'fd' is string in QEMU 10.0.2, the argv gives 3",
        "-netdev nosuch: QEMU 10.0.2 has no netdev type 'nosuch'",
        "-chardev socket: property 'wait' is boolean in QEMU 10.0.2, the argv gives 'no'",
        "-chardev socket: QEMU 10.0.2 has no property 'nope'",
        "-netdev user: QEMU 10.0.2 has no property 'nothing'",
        "-blockdev raw: QEMU 10.0.2 has no property 'cache.nope'",
    ]


def test_chardev_command_line_keys() -> None:
    """-chardev's comma syntax spells some members otherwise (QEMU's qemu_chr_parse_*), and QEMU takes every
    -chardev key with every backend: only a key no backend has is a problem."""
    caps = resolve("10.0.2:x86_64")
    good = ["socket,id=a,fd=3,server=on,wait=off", "socket,id=b,host=127.0.0.1,port=5678,delay=off,mux=on",
            "udp,id=c,host=127.0.0.1,port=2222,localaddr=127.0.0.1,localport=1111", "file,id=d,path=/x,append=on",
            "pipe,id=e,path=/p", "spicevmc,id=f,name=vdagent", "qemu-vdagent,id=g,name=com.redhat.spice.0,mouse=on",
            "pty,id=h,logfile=/l,logappend=on"]
    assert property_problems(["qemu", *(x for v in good for x in ("-chardev", v))], caps) == []
    assert property_problems(["qemu", "-chardev", "pty,id=h,colour=red"], caps) == [
        "-chardev pty: QEMU 10.0.2 has no property 'colour'"]


def test_imported_fixtures_check_the_schema_of_libvirts_replies() -> None:
    """libvirt's caps XML carries no QAPI schema, so the flat union members stay unrecorded; the schema comes
    from libvirt's .replies of the same probe (caps.qapi_schema) and is checked (conformance/argv/qapi_check.py)."""
    imported = resolve("7.2.0:x86_64")
    assert imported.option_members == {}
    assert not imported.records["option members"].covers("netdev:user")
    assert "no QAPI schema" in imported.records["option members"].because
    assert resolve("7.2.22:x86_64").records["option members"].covers("netdev:vde")  # probed: absence is a fact
    argv = ["qemu", "-netdev", '{"type":"user","id":"n","bogus":1}', "-blockdev", '{"driver":"nosuch"}',
            "-chardev", "socket,id=c,reconnect-ms=1"]
    assert property_problems(argv, imported) == [
        "-netdev user: QEMU 7.2.0 has no property 'bogus'",
        "-blockdev nosuch: QEMU 7.2.0 has no blockdev driver 'nosuch'",
        "-chardev socket: QEMU 7.2.0 has no property 'reconnect-ms'",
    ]
    without = dataclasses.replace(imported, qapi_schema="")  # a fixture recording neither: nothing is judged
    assert property_problems(argv, without) == []


def test_the_static_stage_fails_on_a_member_the_qemu_lacks() -> None:
    from conformance.caps.qapi_record import decode, encode
    from conformance.cases import load_catalogue
    from conformance.static import StaticRunner

    caps = resolve("7.2.22:x86_64")
    schema = decode(caps.qapi_schema)
    root = schema["types"][schema["roots"]["blockdev"]]
    root["members"] = [m for m in root["members"] if m[0] != "discard"]  # as if blockdev-add had no 'discard'
    record = {option: {branch: dict(m) for branch, m in branches.items()}
              for option, branches in caps.option_members.items()}
    record["blockdev"][""].pop("discard")
    catalogue = load_catalogue()
    for lacking in (dataclasses.replace(caps, qapi_schema=encode(schema)),  # the QAPI schema check
                    dataclasses.replace(caps, qapi_schema="", option_members=record)):  # the flat members' check
        outcomes = {o.stage: o for o in StaticRunner(catalogue).run(catalogue.cases["disk-virtio-raw"], lacking)}
        assert outcomes["argv"].verdict == "fail"
        assert "-blockdev file: QEMU 7.2.22 has no property 'discard'" in outcomes["argv"].reason
