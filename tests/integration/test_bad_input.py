"""Bad input: each a one-line error naming the file (and line) and what to fix, exit code 2, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.domain.render import render_template
from conformance.domain.schema import schema_status, validate_schema
from conformance.errors import DomainInvalid, TemplateError
from tests.helpers import CLI, ROOT


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder (QEMU_CONFORMANCE_DATA) with our templates and one extra bad case."""
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    return tmp_path


def _add_case(project: Path, name: str, template: str, body: str) -> None:
    (project / "templates" / "domains" / template).write_text(body)
    with (project / "templates" / "cases.toml").open("a") as fh:
        fh.write(f'\n[cases.{name}]\ntemplate = "{template}"\ndescription = "bad on purpose"\n'
                 f'targets = ["x86_64:q35"]\nstages = ["parse"]\n')


def test_malformed_domain_xml(tmp_path: Path) -> None:
    bad = tmp_path / "domain.xml"
    bad.write_text("<domain type='qemu'>\n  <name>x</name>\n  <devices>\n</domain>\n")
    assert_one_line_error(cli("argv", str(bad), "--caps", "7.2:x86_64"), f"{bad}:4:", "malformed XML")


def test_missing_domain_file(tmp_path: Path) -> None:
    assert_one_line_error(cli("argv", str(tmp_path / "none.xml"), "--caps", "7.2:x86_64"), "none.xml")


def test_template_syntax_error(project: Path) -> None:
    _add_case(project, "broken-syntax", "broken.xml.j2", "<domain>\n{% if name %}\n<name>{{ name }}</name>\n")
    proc = cli("render", "broken-syntax", "--caps", str(ROOT / "capsdata/qemu-7.2.22-x86_64.xml"),
               env={"QEMU_CONFORMANCE_DATA": str(project)})
    assert_one_line_error(proc, "broken.xml.j2", "template syntax error")


def test_undefined_variable_names_template_and_line(project: Path) -> None:
    _add_case(project, "undefined-var", "undef.xml.j2",
              "<domain type='qemu'>\n  <name>{{ name }}</name>\n  <memory>{{ no_such_variable }}</memory>\n</domain>\n")
    proc = cli("render", "undefined-var", "--caps", str(ROOT / "capsdata/qemu-7.2.22-x86_64.xml"),
               env={"QEMU_CONFORMANCE_DATA": str(project)})
    assert_one_line_error(proc, "undef.xml.j2:3:", "no_such_variable", "--set")


def test_unknown_case_and_bad_catalogue(project: Path) -> None:
    assert_one_line_error(cli("render", "no-such-case", "--caps", "7.2:x86_64"), "cases.toml", "unknown case")
    (project / "templates" / "cases.toml").write_text("[cases.x]\ntemplate = 'minimal.xml.j2'\ntargets = [\n")
    proc = cli("render", "x", "--caps", str(ROOT / "capsdata/qemu-7.2.22-x86_64.xml"),
               env={"QEMU_CONFORMANCE_DATA": str(project)})
    assert_one_line_error(proc, "cases.toml", "malformed TOML")


def test_fixture_missing_a_needed_field(tmp_path: Path) -> None:
    text = (ROOT / "capsdata/qemu-7.2.22-x86_64.xml").read_text()
    start, end = text.index("<arch>"), text.index("</arch>") + len("</arch>")
    broken = tmp_path / "qemu-7.2.22-x86_64.xml"
    broken.write_text(text[:start] + text[end:])
    domain = tmp_path / "d.xml"
    domain.write_text(cli("render", "q35-minimal", "--caps", "7.2:x86_64").stdout)
    assert_one_line_error(cli("argv", str(domain), "--caps", str(broken)), str(broken), "missing <arch>")


def test_unknown_capabilities_spec() -> None:
    assert_one_line_error(cli("render", "q35-minimal", "--caps", "3.1.0:sparc"), "no stored fixture for 3.1.0:sparc")


def test_autoescape_keeps_structure(tmp_path: Path) -> None:
    (tmp_path / "t.xml.j2").write_text("<domain><name>{{ name }}</name></domain>\n")
    xml = render_template("t.xml.j2", {"name": "a'/><x"}, folder=tmp_path)
    assert "<x" not in xml.replace("&lt;x", "")
    from lxml import etree

    root = etree.fromstring(xml.encode())
    assert [c.tag for c in root] == ["name"] and root[0].text == "a'/><x"


def test_undefined_variable_unit(tmp_path: Path) -> None:
    (tmp_path / "t.xml.j2").write_text("<domain>\n<name>{{ name }}</name>\n<uuid>{{ uuid }}</uuid>\n</domain>\n")
    with pytest.raises(TemplateError) as info:
        render_template("t.xml.j2", {"name": "x"}, folder=tmp_path)
    assert info.value.line == 3 and "uuid" in info.value.message


def test_schema_error_names_element_and_line() -> None:
    if not schema_status().available:
        pytest.skip(schema_status().why)
    xml = (cli("render", "teaming-q35", "--caps", "7.2:x86_64").stdout
           .replace("<teaming type='persistent'/>", "<teaming type='sometimes'/>"))
    line = next(i for i, text in enumerate(xml.splitlines(), 1) if "sometimes" in text)
    with pytest.raises(DomainInvalid) as info:
        validate_schema(xml, source="case.xml")
    assert info.value.line == line
    assert "/domain/devices/interface[1]/teaming" in info.value.message
    assert "type='sometimes'" in info.value.message


def test_schema_unavailable_is_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QEMU_CONFORMANCE_SCHEMA_DIR", str(tmp_path))
    status = validate_schema("<domain/>")
    assert not status.available and "libvirt0" in status.why


def _edited_case(tmp_path: Path, case: str, old: str, new: str, element: str) -> tuple[Path, int]:
    """A case rendered for 7.2 x86_64 with ``old`` replaced by ``new``, written as d.xml, and the line of the
    first ``element`` (what a one-line error must name)."""
    xml = cli("render", case, "--caps", "7.2:x86_64").stdout.replace(old, new)
    domain = tmp_path / "d.xml"
    domain.write_text(xml)
    return domain, next(i for i, text in enumerate(xml.splitlines(), 1) if element in text)


def test_unknown_device_model_names_the_element(tmp_path: Path) -> None:
    domain, line = _edited_case(tmp_path, "net-user-virtio", "<model type='virtio'/>", "<model type='nosuchnic'/>",
                                "<interface")
    assert_one_line_error(cli("argv", str(domain), "--caps", "7.2:x86_64"), f"{domain}:{line}:",
                          "model 'nosuchnic'", "has no device type")


def test_qemu_device_aliases_are_device_types() -> None:
    """libvirt writes QEMU's alias `lsi` for an lsilogic controller (and `ahci` for SATA): not unknown."""
    from conformance.argv.device_types import qom_type

    types = frozenset({"lsi53c895a", "ich9-ahci", "virtio-net-pci", "e1000"})
    assert qom_type("lsi", types) == "lsi53c895a" and qom_type("ahci", types) == "ich9-ahci"
    assert qom_type("virtio-net", types) == "virtio-net-pci" and qom_type("e1000-82540em", types) == "e1000"
    assert qom_type("virtio-blk", types) is None and qom_type("nosuchnic", types) is None


def test_dc390_controller_is_refused_as_libvirt_names_it(tmp_path: Path) -> None:
    """libvirt writes `-device dc-390` for model='dc390', a name QEMU does not have: refused, not renamed."""
    domain, line = _edited_case(tmp_path, "q35-storage-rich", "model='am53c974'", "model='dc390'", "model='dc390'")
    assert_one_line_error(cli("argv", str(domain), "--caps", "7.2:x86_64"), f"{domain}:{line}:",
                          "no device type 'dc-390'")
