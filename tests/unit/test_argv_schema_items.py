"""Schema items that moved out of class d (not supported yet) into the builder, each as libvirt's qemuBuild*
function builds it: evdev input, 9p fmode/dmode, disk geometry, async teardown, the TSC frequency."""

from __future__ import annotations

import json

import pytest

from conformance.argv import build_argv
from conformance.argv.schema_coverage import classifier
from conformance.caps.store import resolve
from conformance.domain.parse import parse_domain
from conformance.errors import DomainInvalid, UnsupportedByQemu

_DOMAIN = """<domain type='kvm'>
  <name>d</name><memory unit='MiB'>256</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  {top}
  <devices>{devices}</devices>
</domain>"""


def _argv(devices: str = "", top: str = "", caps: str = "latest:x86_64") -> list[str]:
    xml = _DOMAIN.format(devices=devices, top=top)
    return build_argv(parse_domain(xml, source="d.xml"), resolve(caps))


def _options(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


def test_evdev_input_is_an_input_linux_object() -> None:
    argv = _argv("<input type='evdev'><source dev='/dev/input/event1' grab='all' grabToggle='alt-alt' "
                 "repeat='on'/></input><input type='evdev'><source dev='/dev/input/event2'/></input>")
    objects = [json.loads(o) for o in _options(argv, "-object") if "input-linux" in o]
    assert objects == [
        {"qom-type": "input-linux", "id": "input0", "evdev": "/dev/input/event1", "repeat": True, "grab_all": True,
         "grab-toggle": "alt-alt"},
        {"qom-type": "input-linux", "id": "input1", "evdev": "/dev/input/event2"},
    ]
    assert classifier().rule("/domain/devices/input[@type='evdev']").cls == "a"


def test_9p_fmode_dmode_and_squash() -> None:
    argv = _argv("<filesystem type='mount' accessmode='squash' fmode='644' dmode='755' multidevs='default'>"
                 "<source dir='/srv'/><target dir='t'/></filesystem>")
    assert _options(argv, "-fsdev") == ["local,security_model=none,fmode=0644,dmode=0755,id=fsdev-fs0,path=/srv"]
    with pytest.raises(DomainInvalid, match="fmode='999'"):
        _argv("<filesystem type='mount' fmode='999'><source dir='/srv'/><target dir='t'/></filesystem>")


def test_disk_geometry_and_translation_on_ide_only() -> None:
    argv = _argv("<disk type='file' device='disk'><source file='/a.img'/><target dev='hda' bus='ide'/>"
                 "<geometry cyls='16383' heads='16' secs='63' trans='lba'/></disk>")
    ide = json.loads(next(d for d in _options(argv, "-device") if "ide-hd" in d))
    assert (ide["cyls"], ide["heads"], ide["secs"], ide["bios-chs-trans"]) == (16383, 16, 63, "lba")
    with pytest.raises(DomainInvalid, match="CHS translation mode can only be set for 'ide' bus not 'virtio'"):
        _argv("<disk type='file' device='disk'><source file='/a.img'/><target dev='vda' bus='virtio'/>"
              "<geometry cyls='100' heads='16' secs='63' trans='lba'/></disk>")


def test_async_teardown_where_qemu_has_it() -> None:
    assert _argv(top="<features><async-teardown enabled='yes'/></features>")[-2:] == \
        ["-run-with", "async-teardown=on"]
    assert _argv(top="<features><async-teardown enabled='no'/></features>")[-2:] == \
        ["-run-with", "async-teardown=off"]
    with pytest.raises(UnsupportedByQemu, match="asynchronous teardown is not available"):
        _argv(top="<features><async-teardown enabled='yes'/></features>", caps="5.2.0:x86_64")


def test_tsc_frequency() -> None:
    argv = _argv(top="<clock offset='utc'><timer name='tsc' frequency='3504000000'/></clock>")
    assert _options(argv, "-cpu")[0].endswith(",tsc-frequency=3504000000")


@pytest.mark.parametrize(("cpu", "tail"), [
    # the host's cache information is switched off only for a CPU that would pass it through
    ("<cpu mode='host-passthrough'><cache mode='disable'/></cpu>", "host-cache-info=off,l3-cache=off"),
    ("<cpu mode='custom'><model>Haswell</model><cache mode='disable'/></cpu>", ",l3-cache=off"),
    ("<cpu mode='maximum'><cache mode='emulate'/></cpu>", "l3-cache=on,host-cache-info=off"),
    ("<cpu mode='custom'><model>Haswell</model><maxphysaddr mode='emulate'/></cpu>", ",host-phys-bits=off"),
    ("<cpu mode='custom'><model>Haswell</model><maxphysaddr mode='emulate' bits='42'/></cpu>", ",phys-bits=42"),
])
def test_cpu_cache_and_physical_address_bits(cpu: str, tail: str) -> None:
    """After the PMU and the other flags, for every CPU mode (host-model included: they were dropped there)."""
    argv = _argv(top=cpu + "<features><pmu state='off'/></features>")
    flags = _options(argv, "-cpu")[0]
    assert flags.endswith(tail) and "host-cache-info=off,l3-cache=on" not in flags
    if "custom" in cpu:
        assert "host-cache-info" not in flags
    assert flags.index("pmu=off") < flags.index(tail.lstrip(",").split(",")[0])


def test_namespace_capabilities_edit_the_flags_of_this_domain_only() -> None:
    """<qemu:capabilities>: a flag the domain deletes is gone for its argv, the fixture keeps it."""
    caps = resolve("latest:x86_64")
    assert caps.has("run-with.async-teardown")
    ns = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
    xml = _DOMAIN.format(devices="", top="<features><async-teardown enabled='no'/></features><qemu:capabilities>"
                         "<qemu:del capability='run-with.async-teardown'/></qemu:capabilities>")
    argv = build_argv(parse_domain(xml.replace("<domain type='kvm'>", f"<domain type='kvm' {ns}>"), source="d.xml"),
                      caps)
    assert "-run-with" not in argv
    assert caps.has("run-with.async-teardown")


def test_nbd_reconnect_delay() -> None:
    argv = _argv("<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='nbd' "
                 "name='foo'><host name='example.org' port='6000'/><reconnect delay='10'/></source>"
                 "<target dev='vda' bus='virtio'/></disk>")
    nbd = json.loads(next(b for b in _options(argv, "-blockdev") if '"nbd"' in b))
    assert nbd["reconnect-delay"] == 10


def test_tap_sndbuf() -> None:
    argv = _argv("<interface type='bridge'><source bridge='br0'/><model type='virtio'/><tune><sndbuf>1600</sndbuf>"
                 "</tune></interface>")
    tap = json.loads(next(n for n in _options(argv, "-netdev") if '"tap"' in n))
    assert tap["sndbuf"] == 1600 and list(tap)[-1] == "id"
