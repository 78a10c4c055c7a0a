"""A case's qemu_args written for each build (conformance/domain/commandline.py): JSON -device/-object where
the build takes them, comma syntax where it does not, and groups of devices a build lacks left out."""

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
    {"needs_types": ["acpi-erst"], "args": ["-device", '{"driver":"acpi-erst","id":"erst0"}']},
    {"needs": ["virtio-iommu.boot-bypass"], "args": ["-device", '{"driver":"virtio-iommu-pci","id":"vi0"}']},
]


def test_json_stays_json_where_the_build_takes_it() -> None:
    caps = resolve("10.0.2:x86_64")
    args, left_out = qemu_args_for(ARGS, caps, where="cases.toml")
    assert args == [*ARGS[:6], "-device", '{"driver":"acpi-erst","id":"erst0"}',
                    "-device", '{"driver":"virtio-iommu-pci","id":"vi0"}']
    assert left_out == []


def test_comma_syntax_and_groups_left_out_on_5_2() -> None:
    caps = resolve("5.2.0:x86_64")
    assert not caps.has("device.json") and not caps.has("object.qapified")
    args, left_out = qemu_args_for(ARGS, caps, where="cases.toml")
    assert args == ["-object", "memory-backend-ram,id=shm0,size=1048576,share=on",
                    "-device", "ivshmem-plain,memdev=shm0,master=on,id=iv,,0,addr=0x10",
                    "-chardev", "null,id=c0"]
    assert left_out == ["acpi-erst", "virtio-iommu.boot-bypass"]


@pytest.mark.parametrize("entry, message", [
    ({"args": ["-device", "x"], "when": "never"}, "is not a group"),
    ({"needs_types": ["acpi-erst"]}, "is not a group"),
])
def test_a_malformed_group_names_the_case(entry: dict, message: str) -> None:
    with pytest.raises(CaseError, match=message) as caught:
        qemu_args_for([entry], resolve("5.2.0:x86_64"), where="cases.toml:7", case_name="some-case")
    assert "cases.toml:7: case some-case" in str(caught.value)


def test_json_with_no_comma_form_is_refused_on_5_2() -> None:
    with pytest.raises(CaseError, match="has no comma-syntax form"):
        qemu_args_for(["-device", '{"driver":"x","list":[1,2]}'], resolve("5.2.0:x86_64"), where="cases.toml")


def test_one_static_runner_writes_each_fixture_its_own_syntax() -> None:
    """The static runner memoises a case's rendering; the memo must not hand 7.2's JSON to 5.2."""
    runner = StaticRunner(load_catalogue())
    case = runner.catalogue.get("q35-misc-rich")
    new, old = resolve("7.2.22:x86_64"), resolve("5.2.0:x86_64")
    new_xml = runner.prepare(case, new, "q35").xml
    old_xml = runner.prepare(case, old, "q35").xml
    assert "&#34;driver&#34;:&#34;pvpanic-pci&#34;" in new_xml
    assert "pvpanic-pci" not in old_xml.split("<qemu:commandline>")[1]
    assert "<qemu:arg value='ipmi-bmc-sim,id=bmc0'/>" in old_xml
    assert "groups left out: this QEMU lacks pvpanic-pci, acpi-erst" in old_xml
