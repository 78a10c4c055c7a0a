"""A case's qemu_args written for each build (conformance/domain/commandline.py): JSON -device/-object where
the build takes them, comma syntax where it does not, the same devices on every build."""

from __future__ import annotations

import pytest

from conformance.caps.store import resolve
from conformance.cases import load_catalogue
from conformance.domain.commandline import qemu_args_for
from conformance.errors import CaseError
from conformance.static import StaticRunner

ARGS = [
    "-object", '{"qom-type":"memory-backend-ram","id":"shm0","size":1048576,"share":true}',
    "-device", '{"driver":"ivshmem-plain","memdev":"shm0","master":"on","id":"iv,0","addr":"0x10"}',
    "-chardev", "null,id=c0",
]


def test_json_stays_json_where_the_build_takes_it() -> None:
    assert qemu_args_for(ARGS, resolve("10.0.2:x86_64"), where="cases.toml") == ARGS


def test_comma_syntax_on_5_2() -> None:
    caps = resolve("5.2.0:x86_64")
    assert not caps.has("device.json") and not caps.has("object.qapified")
    assert qemu_args_for(ARGS, caps, where="cases.toml") == [
        "-object", "memory-backend-ram,id=shm0,size=1048576,share=on",
        "-device", "ivshmem-plain,memdev=shm0,master=on,id=iv,,0,addr=0x10",
        "-chardev", "null,id=c0"]


@pytest.mark.parametrize("value, message", [
    ('{"driver":"x","list":[1,2]}', "has no comma-syntax form"),
    ('{"id":"x"}', "has no comma-syntax form"),
    ('{"driver":', "not JSON"),
])
def test_json_with_no_comma_form_is_refused_on_5_2(value: str, message: str) -> None:
    with pytest.raises(CaseError, match=message) as caught:
        qemu_args_for(["-device", value], resolve("5.2.0:x86_64"), where="cases.toml:7", case_name="some-case")
    assert "cases.toml:7: case some-case" in str(caught.value)


def test_one_static_runner_writes_each_fixture_its_own_syntax() -> None:
    """The static runner memoises a case's rendering; the memo must not hand 7.2's JSON to 5.2."""
    runner = StaticRunner(load_catalogue())
    case = runner.catalogue.get("q35-misc-rich")
    new_xml = runner.prepare(case, resolve("7.2.22:x86_64"), "q35").xml
    old_xml = runner.prepare(case, resolve("5.2.0:x86_64"), "q35").xml
    assert "&#34;driver&#34;:&#34;ipmi-bmc-sim&#34;" in new_xml
    assert "<qemu:arg value='ipmi-bmc-sim,id=bmc0'/>" in old_xml
