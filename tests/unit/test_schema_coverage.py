"""libvirt's domain schema classified item by item (conformance/argv/schema_classes.toml), and the argv
stage refusing what is not supported yet instead of building a domain without it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conformance.argv import build_argv
from conformance.argv.schema_coverage import (
    CLASSES_FILE,
    Classifier,
    _compile,
    classifier,
    coverage,
    load_rules,
    schema_items,
)
from conformance.caps.store import resolve
from conformance.domain.parse import parse_domain
from conformance.errors import UnsupportedByQemu

# Ratchets on the table's headline (libvirt 11.3's schema): raise them as items move out of class d.
ABC_FLOOR = 0.975
D_CEILING = 117


@pytest.fixture(scope="module")
def schema(corpus: Path) -> Path:
    path = corpus / "schemas" / "domain.rng"
    if not path.exists():
        pytest.skip(f"libvirt's domain schema not found at {path}")
    return path


def test_every_schema_item_has_a_rule(schema: Path) -> None:
    """No fifth state: an element or attribute the schema allows and no rule classifies fails here."""
    cov = coverage(schema)
    assert len(cov.rows) > 3000  # the whole schema was walked, includes and all
    missing = [it.path for it in cov.unclassified()]
    assert not missing, f"{len(missing)} schema items have no rule in {CLASSES_FILE.name}: {missing[:20]}"


def test_headline_share_and_unsupported_count(schema: Path) -> None:
    cov = coverage(schema)
    counts = cov.counts()
    assert cov.share_abc() >= ABC_FLOOR, cov.headline()
    assert counts["d"] <= D_CEILING, cov.headline()
    assert counts["a"] > counts["b"] > 0 and counts["c"] > 0


def test_every_rule_classifies_some_schema_item(schema: Path) -> None:
    """A rule that matches nothing is a typo (or the schema moved on): it would hide nothing and refuse
    nothing."""
    paths = [it.path for it in schema_items(schema)]
    dead = [r.path for r in load_rules() if not any(r.regex.match(p) for p in paths)]
    # a value rule on an attribute the schema does not enumerate (tls='no', a free-form name) is checked at
    # run time only: its attribute must exist
    runtime_only = [d for d in dead if (m := re.fullmatch(r"(.*)\[@([^=\]]+)=.*\]", d))
                    and any(_compile(f"{m[1]}/@{m[2]}").match(p) for p in paths)]
    assert sorted(set(dead) - set(runtime_only)) == []


def test_walk_names_elements_attributes_and_enumerated_values(schema: Path) -> None:
    items = {it.path: it.kind for it in schema_items(schema)}
    assert items["/domain/devices/input"] == "element"
    assert items["/domain/devices/input/@bus"] == "attribute"
    assert items["/domain/devices/input[@type='evdev']"] == "value"  # one value per group of a choice
    assert items["/domain/qemu:commandline/qemu:arg"] == "element"  # namespaced, the schema's own prefix
    assert "/domain/metadata/*" in items  # any element: not walked further
    assert not any(p.endswith("[@readonly='yes']") for p in items)  # a yes/no switch is its attribute
    assert items["/domain/on_reboot[.='destroy']"] == "value"  # an element's text the schema enumerates
    assert items["/domain/os/type[.='hvm']"] == "value"
    assert not any("/domain/name[." in p for p in items)  # free text (data) is its element


def test_text_values_are_classified_and_walked() -> None:
    from lxml import etree

    from conformance.argv.schema_coverage import classifier, domain_items

    cl = classifier()
    assert cl.rule("/domain/on_reboot[.='destroy']").cls == "a"
    assert cl.rule("/domain/on_crash[.='rename-restart']").cls == "c"
    assert cl.rule("/domain/on_lockfailure[.='pause']").cls == "b"
    root = etree.fromstring("<domain><on_reboot> destroy </on_reboot><name>x</name></domain>")
    paths = [p for p, _ in domain_items(root)]
    assert paths == ["/domain", "/domain/on_reboot", "/domain/on_reboot[.='destroy']", "/domain/name"]


def test_rules_need_no_schema() -> None:
    """The classification is the suite's own data: it classifies without libvirt's schema at hand."""
    cl = Classifier(load_rules())
    assert cl.rule("/domain/devices/memory[@model='sgx-epc']").cls == "d"
    assert cl.rule("/domain/devices/input[@type='tablet']").cls == "a"  # no value rule: the attribute's class
    assert cl.rule("/domain/metadata/app:whatever/deep/@x").cls == "b"
    assert cl.rule("/domain/devices/disk/iotune/total_bytes_sec").cls == "b"
    assert cl.rule("/domain/features/hpt").cls == "c"
    assert "qemuBuild" in cl.rule("/domain/devices/interface/model/@type").why


def test_most_specific_rule_wins() -> None:
    cl = classifier()
    assert cl.rule("/domain/devices/controller/target/@memReserve").cls == "d"
    assert cl.rule("/domain/devices/controller/target/@chassis").cls == "a"
    assert cl.rule("/domain/devices/serial/source[@tls='no']").cls == "b"
    assert cl.rule("/domain/devices/serial/source[@tls='yes']").cls == "d"  # the attribute's class


_DOMAIN = """<domain type='qemu'>
  <name>d</name><memory unit='MiB'>256</memory>
  <metadata><app:info xmlns:app='http://example.org/app'><app:x id='1'/></app:info></metadata>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>{devices}</devices>
</domain>"""


def _argv(devices: str) -> list[str]:
    return build_argv(parse_domain(_DOMAIN.format(devices=devices), source="d.xml"), resolve("latest:x86_64"))


def test_unsupported_item_fails_the_domain_with_one_line_naming_its_path() -> None:
    with pytest.raises(UnsupportedByQemu) as exc:
        _argv("<memory model='sgx-epc'><target><size unit='KiB'>16384</size></target></memory>")
    message = exc.value.format()
    assert message.startswith("d.xml:5: unsupported: /domain/devices/memory[@model='sgx-epc'] ")
    assert "\n" not in message


def test_unsupported_attribute_is_named() -> None:
    with pytest.raises(UnsupportedByQemu, match=r"unsupported: /domain/devices/controller/target/@memReserve "):
        _argv("<controller type='pci' model='pcie-root-port'><target memReserve='65536'/></controller>")


def test_refused_for_these_arches_in_libvirts_words() -> None:
    with pytest.raises(UnsupportedByQemu, match=r"unsupported configuration: /domain/devices/nvram: .*pSeries"):
        _argv("<nvram><address type='spapr-vio' reg='0x3000'/></nvram>")


def test_known_items_still_build() -> None:
    argv = _argv("<input type='tablet' bus='usb'/><serial type='tcp'><source mode='connect' host='127.0.0.1' "
                 "service='5555' tls='no'/><protocol type='raw'/><target port='0'/></serial>")
    assert any("usb-tablet" in a for a in argv)
    assert any(a.startswith("socket,id=charserial0") or '"charserial0"' in a for a in argv)


def test_cli_prints_the_table_and_the_headline(schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main

    assert main(["argv", "--schema-coverage", "d"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("libvirt domain schema: ") and "(a)+(b)+(c)" in lines[-1]
    assert any(line.startswith("d      /domain/devices/controller/target/@memReserve ") for line in lines)
    assert not any(line.startswith(("a ", "b ", "c ")) for line in lines)  # only the classes asked for


def test_cli_argv_without_a_domain_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main

    assert main(["argv"]) == 2
    err = capsys.readouterr().err.strip()
    assert "argv needs a domain XML and --caps" in err and "\n" not in err
