"""The QAPI schema check of -netdev/-blockdev/-chardev/-object (conformance/argv/qapi_check.py) and the record
it reads (conformance/caps/qapi_record.py), on small excerpts of real schemas: QEMU 7.2.0's netdev_add as libvirt's
caps_7.2.0_x86_64.replies gives it (the stream netdev and its SocketAddress), and members QEMU 10.0 marks
deprecated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.argv.qapi_check import qapi_problems, schema_of
from conformance.caps.model import Capabilities, QemuVersion
from conformance.caps.qapi_record import decode, encode, record_from_schema, schema_from_replies
from conformance.caps.store import resolve
from conformance.errors import FixtureError

# query-qmp-schema entries of QEMU 7.2.0 (libvirt's caps_7.2.0_x86_64.replies; masked names as QEMU gave them),
# netdev_add's Netdev union cut down to its 'user' and 'stream' branches, NetdevUserOptions to three members
EXCERPT: list[dict[str, Any]] = [
    {"name": "netdev_add", "ret-type": "0", "meta-type": "command", "arg-type": "100"},
    {"name": "100", "meta-type": "object", "tag": "type",
     "members": [{"name": "id", "type": "str"}, {"name": "type", "type": "445"}],
     "variants": [{"case": "user", "type": "447"}, {"case": "stream", "type": "452"}]},
    {"name": "445", "meta-type": "enum", "values": ["user", "stream"]},
    {"name": "447", "meta-type": "object", "members": [
        {"name": "hostname", "default": None, "type": "str"}, {"name": "ipv4", "default": None, "type": "bool"},
        {"name": "hostfwd", "default": None, "type": "[463]"}]},
    {"name": "[463]", "element-type": "463", "meta-type": "array"},
    {"name": "463", "meta-type": "object", "members": [{"name": "str", "type": "str"}]},
    {"name": "452", "meta-type": "object", "members": [
        {"name": "addr", "type": "464"}, {"name": "server", "default": None, "type": "bool"}]},
    {"name": "464", "meta-type": "object", "tag": "type", "members": [{"name": "type", "type": "465"}],
     "variants": [{"case": "inet", "type": "466"}, {"case": "unix", "type": "467"}]},
    {"name": "465", "meta-type": "enum", "values": ["inet", "unix"]},
    {"name": "466", "meta-type": "object", "members": [
        {"name": "host", "type": "str"}, {"name": "port", "type": "str"},
        {"name": "to", "default": None, "type": "int"}]},
    {"name": "467", "meta-type": "object", "members": [
        {"name": "path", "type": "str"}, {"name": "abstract", "default": None, "type": "bool"}]},
    {"name": "str", "json-type": "string", "meta-type": "builtin"},
    {"name": "bool", "json-type": "boolean", "meta-type": "builtin"},
    {"name": "int", "json-type": "int", "meta-type": "builtin"},
]


def _caps(schema: list[dict[str, Any]], version: str = "7.2.0") -> Capabilities:
    return Capabilities(version=QemuVersion.parse(version), arch="x86_64",
                        qapi_schema=encode(record_from_schema(schema)))


def test_the_record_keeps_the_walk_from_the_roots() -> None:
    record = record_from_schema(EXCERPT)
    assert record["roots"] == {"netdev": "0"}  # QEMU's masked names renamed in walk order
    assert record["types"]["0"] == {"members": [["id", "str", ""], ["type", "1", ""]], "tag": "type",
                                    "variants": {"user": "2", "stream": "5"}}
    assert record["types"]["2"]["members"][2] == ["hostfwd", "3", "o"]
    assert record["types"]["3"] == {"array": "4"}
    assert decode(encode(record)) == record
    assert len(encode(record).splitlines()) == len(record["types"]) + 3  # one type a line: diffs show which


def test_a_valid_option_passes_in_both_syntaxes() -> None:
    caps = _caps(EXCERPT)
    good = [json.dumps({"type": "stream", "id": "n0", "server": False,
                        "addr": {"type": "inet", "host": "127.0.0.1", "port": "5555", "to": 5560}}),
            json.dumps({"type": "user", "id": "n1", "hostname": "g", "hostfwd": [{"str": "tcp::2222-:22"}]}),
            "user,id=n2,ipv4=on,hostfwd=tcp::2222-:22",  # a repeated key is QEMU's list
            "stream,id=n3,addr.type=unix,addr.path=/run/n3"]
    assert [qapi_problems("-netdev", v, caps) for v in good] == [[], [], [], []]


@pytest.mark.parametrize(("value", "problem"), [
    ('{"type":"user","id":"n","bogus":1}', "-netdev user: QEMU 7.2.0 has no property 'bogus'"),
    ('{"type":"stream","id":"n","addr":{"type":"unix","path":"/p","nope":true}}',
     "-netdev stream: QEMU 7.2.0 has no property 'addr.nope'"),
    ('{"type":"user","id":"n","ipv4":"on"}',
     "-netdev user: property 'ipv4' is boolean in QEMU 7.2.0, the argv gives 'on'"),
    ("user,id=n,ipv4=maybe", "-netdev user: property 'ipv4' is boolean in QEMU 7.2.0, the argv gives 'maybe'"),
    ('{"type":"stream","id":"n","addr":{"type":"inet","host":"h","port":5555}}',
     "-netdev stream: property 'addr.port' is string in QEMU 7.2.0, the argv gives 5555"),
    ('{"type":"stream","id":"n","server":true}',
     "-netdev stream: QEMU 7.2.0 requires property 'addr', the argv has none"),
    ('{"type":"stream","id":"n","addr":{"type":"unix"}}',
     "-netdev stream: QEMU 7.2.0 requires property 'addr.path', the argv has none"),
    ('{"type":"user"}', "-netdev user: QEMU 7.2.0 requires property 'id', the argv has none"),
    ('{"type":"dgram","id":"n"}', "-netdev dgram: QEMU 7.2.0 has no netdev type 'dgram'"),
    ('{"type":"stream","id":"n","addr":{"type":"vsock","cid":"3","port":"1"}}',
     "-netdev stream: QEMU 7.2.0 has no 'vsock' for property 'addr.type'"),
], ids=["unknown", "unknown-nested", "wrong-type", "wrong-type-keyval", "wrong-type-nested", "missing",
        "missing-nested", "missing-id", "unknown-branch", "unknown-nested-branch"])
def test_each_violation_is_one_line_naming_option_member_and_qemu(value: str, problem: str) -> None:
    assert qapi_problems("-netdev", value, _caps(EXCERPT)) == [problem]


def test_deprecated_and_unstable_fail_as_in_libvirts_test() -> None:
    """QEMU 10.0.2 (probed): chardev socket's 'reconnect' and the gluster driver are deprecated, blockdev
    file's 'x-check-cache-dropped' unstable; libvirt's test refuses both (testQEMUSchemaValidateFeatures)."""
    caps = resolve("10.0.2:x86_64")
    assert qapi_problems("-chardev", "socket,id=c,path=/c,server=on,wait=off,reconnect=1", caps) == [
        "-chardev socket: property 'reconnect' is deprecated in QEMU 10.0.2"]
    assert qapi_problems("-blockdev", json.dumps(
        {"driver": "file", "filename": "/f", "node-name": "s", "x-check-cache-dropped": True}), caps) == [
        "-blockdev file: property 'x-check-cache-dropped' is unstable in QEMU 10.0.2"]
    assert qapi_problems("-blockdev", json.dumps(
        {"driver": "gluster", "node-name": "g", "volume": "v", "path": "p",
         "server": [{"type": "unix", "path": "/g"}]}), caps) == [
        "-blockdev gluster: driver 'gluster' is deprecated in QEMU 10.0.2"]


def test_object_is_checked_from_6_0_and_left_to_qom_before() -> None:
    """object-add takes the ObjectOptions union from QEMU 6.0; before, untyped props: not this check's."""
    value = "memory-backend-ram,id=m,size=1G,share=on"
    assert qapi_problems("-object", value, resolve("6.0.0:x86_64")) == []
    assert qapi_problems("-object", value + ",colour=red", resolve("6.0.0:x86_64")) == [
        "-object memory-backend-ram: QEMU 6.0.0 has no property 'colour'"]
    assert qapi_problems("-object", '{"qom-type":"memory-backend-ram","id":"m","size":"1G"}',
                         resolve("6.0.0:x86_64")) == [
        "-object memory-backend-ram: property 'size' is int in QEMU 6.0.0, the argv gives '1G'"]
    assert qapi_problems("-object", value + ",colour=red", resolve("5.2.0:x86_64")) is None
    assert qapi_problems("-netdev", "user,id=n,colour=red", resolve("4.2.0:x86_64")) is None  # netdev_add: 5.0


def test_no_schema_means_not_judged_and_a_broken_one_says_where() -> None:
    caps = resolve("7.2.0:x86_64")
    assert qapi_problems("-netdev", '{"type":"nosuch"}', dataclasses.replace(caps, qapi_schema="")) is None
    broken = dataclasses.replace(caps, qapi_schema='{"roots": {')
    with pytest.raises(FixtureError, match="<qapi-schema> is not JSON"):
        schema_of(broken)


def test_replies_give_the_schema(tmp_path: Path) -> None:
    """libvirt's .replies: each command, then QEMU's answer, as JSON documents one after another."""
    replies = tmp_path / "caps_7.2.0_x86_64.replies"
    replies.write_text('{\n  "execute": "query-version",\n  "id": "libvirt-2"\n}\n\n{\n  "return": {},\n'
                       '  "id": "libvirt-2"\n}\n\n{\n  "execute": "query-qmp-schema",\n  "id": "libvirt-4"\n}\n\n'
                       + json.dumps({"return": EXCERPT, "id": "libvirt-4"}, indent=2) + "\n")
    assert schema_from_replies(replies) == EXCERPT
    (tmp_path / "empty.replies").write_text('{"execute": "query-version"}\n{"return": {}}\n')
    with pytest.raises(FixtureError, match="no query-qmp-schema answer"):
        schema_from_replies(tmp_path / "empty.replies")


def test_the_import_takes_the_replies_beside_the_caps_xml(tmp_path: Path) -> None:
    corpus_caps = Path(__file__).resolve().parents[2].parent / "shared" / "peer" / "libvirt-corpus" / "caps" / \
        "libvirt-11.3.0" / "caps_7.2.0_x86_64.xml"
    if not corpus_caps.exists():
        pytest.skip(f"libvirt corpus not found at {corpus_caps}")
    from conformance.caps.libvirt_import import import_libvirt_caps

    xml = tmp_path / "libvirt-11.3.0" / corpus_caps.name
    xml.parent.mkdir()
    xml.write_bytes(corpus_caps.read_bytes())
    assert import_libvirt_caps(xml).qapi_schema == ""  # no .replies: nothing recorded
    xml.with_suffix(".replies").write_text(json.dumps({"execute": "query-qmp-schema"}) + "\n"
                                           + json.dumps({"return": EXCERPT}) + "\n")
    caps = import_libvirt_caps(xml)
    assert decode(caps.qapi_schema) == record_from_schema(EXCERPT)
    assert qapi_problems("-netdev", "user,id=n,bogus=1", caps) == ["-netdev user: QEMU 7.2.0 has no property 'bogus'"]
