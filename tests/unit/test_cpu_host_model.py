"""<cpu mode='host-model'>: libvirt's x86 decoding of QEMU's host CPU expansion, and its clear errors.

The decoding rules are checked twice: on a small CPU map written here (each rule on its own),
and on libvirt's real map against the command lines libvirt's own test suite expects.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conformance.argv import cpu_map as cpu_map_mod
from conformance.argv import cpu_x86
from conformance.argv.command import argv_for_file, load_caps
from conformance.argv.cpu_map import find_cpu_map, load_x86_map
from conformance.caps.model import CpuModel, CpuProperty, HostCpu
from conformance.caps.store import resolve
from conformance.errors import UnsupportedByQemu

# --- a small CPU map of our own: one leaf, one bit per feature ----------------------------------

_FEATURES = ["fa", "fb", "fc", "fd", "fe", "ff", "msrf"]


def _map_xml(models: str) -> dict[str, str]:
    feats = "".join(f"<feature name='{name}'><cpuid eax_in='0x01' ecx='{1 << i:#010x}'/></feature>"
                    for i, name in enumerate(_FEATURES[:-1]))
    feats += "<feature name='msrf'><msr index='0x10a' edx='0x0' eax='0x1'/></feature>"
    return {
        "index.xml": "<cpus><arch name='x86'><include filename='v.xml'/><include filename='f.xml'/>"
                     "<group name='m'><include filename='m.xml'/></group></arch></cpus>",
        "v.xml": "<cpus><vendor name='Intel' string='GenuineIntel'/><vendor name='AMD' string='AuthenticAMD'/></cpus>",
        "f.xml": f"<cpus>{feats}</cpus>",
        "m.xml": f"<cpus>{models}</cpus>",
    }


def _model(name: str, feats: str, *, vendor: str = "AMD", sig: str = "", guest: str = "on", extra: str = "") -> str:
    body = "".join(f"<feature name='{f}'/>" for f in feats.split())
    signature = f"<signature family='{sig.split('/')[0]}' model='{sig.split('/')[1]}'/>" if sig else ""
    return (f"<model name='{name}'><decode host='on' guest='{guest}'/>{signature}<vendor name='{vendor}'/>"
            f"{body}{extra}</model>")


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "cpu_map"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _data(cmap, feats: str, vendor: str = "AuthenticAMD", family: int = 0, model: int = 0) -> cpu_x86.CpuData:
    props = [CpuProperty(f, "boolean", "true") for f in feats.split()]
    props += [CpuProperty("vendor", "string", vendor), CpuProperty("family", "number", str(family)),
              CpuProperty("model", "number", str(model))]
    return cpu_x86.data_from_properties(cmap, props, migratable=False)


def test_fewest_changes_wins_and_lists_follow_the_map_order(tmp_path: Path) -> None:
    cmap = load_x86_map(_write(tmp_path, _map_xml(_model("Small", "fa") + _model("Big", "fa fb fc fd"))))
    got = cpu_x86.decode(cmap, _data(cmap, "fa fb fc fe"), None)
    # Big: +fe -fd = 1 + 2 = 3; Small: +fb +fc +fe = 3, tie: fewer disabled wins; Big is checked first
    assert got.model == "Small"
    assert got.features == (("fb", "require"), ("fc", "require"), ("fe", "require"))
    got = cpu_x86.decode(cmap, _data(cmap, "fa fb fc fd fe"), None)
    assert got.model == "Big" and got.features == (("fe", "require"),)
    # a disabled feature costs more than an extra one: -fd (2) loses to +fb +fc with no disabled (2, tie)
    assert cpu_x86.decode(cmap, _data(cmap, "fa fb fc"), None).model == "Small"


def test_signature_match_beats_a_shorter_list(tmp_path: Path) -> None:
    models = _model("Old", "fa fb", sig="23/1") + _model("New", "fa fb fc fd")
    cmap = load_x86_map(_write(tmp_path, _map_xml(models)))
    got = cpu_x86.decode(cmap, _data(cmap, "fa fb fc fd", family=23, model=1), None)
    assert got.model == "Old" and got.features == (("fc", "require"), ("fd", "require"))


def test_vendor_guest_decoding_and_qemu_model_list_filter_candidates(tmp_path: Path) -> None:
    models = (_model("A", "fa") + _model("IntelOnly", "fa fb", vendor="Intel")
              + _model("HostOnly", "fa fb", guest="off"))
    cmap = load_x86_map(_write(tmp_path, _map_xml(models)))
    got = cpu_x86.decode(cmap, _data(cmap, "fa fb"), None)
    assert got.model == "A" and got.vendor == "AMD"
    with pytest.raises(UnsupportedByQemu, match="no CPU model"):
        cpu_x86.decode(cmap, _data(cmap, "fa fb"), {"IntelOnly": ()})


def test_blockers_and_removed_features_are_disabled(tmp_path: Path) -> None:
    models = _model("A", "fa fb", extra="<feature name='fc' removed='yes'/>")
    cmap = load_x86_map(_write(tmp_path, _map_xml(models)))
    got = cpu_x86.decode(cmap, _data(cmap, "fa fb fd"), {"A": ("fb", "fd")})
    # fb blocks the model and is part of it -> disabled; fd is in the data beyond the model -> kept
    assert got.features == (("fd", "require"), ("fb", "disable"), ("fc", "disable"))


def test_disabled_feature_cost_uses_libvirts_shrinking_loop() -> None:
    r, d = cpu_x86.REQUIRE, cpu_x86.DISABLE
    assert cpu_x86._cost([("a", r), ("b", d)]) == (1 + 2, 2)
    # four disabled at the end of six: the bound shrinks, only two are counted (2 + 3)
    assert cpu_x86._cost([("a", r), ("b", r), ("c", d), ("e", d), ("f", d), ("g", d)]) == (4 + 5, 5)


def test_signature_encoding_round_trips() -> None:
    for family, model, stepping in ((6, 85, 4), (23, 49, 0), (25, 1, 1), (15, 6, 1)):
        assert cpu_x86.split_signature(cpu_x86.make_signature(family, model, stepping)) == (family, model, stepping)


# --- libvirt's own map against libvirt's expected command lines --------------------------------


@pytest.fixture(scope="module")
def real_map() -> Path:
    try:
        return find_cpu_map()
    except UnsupportedByQemu as exc:
        pytest.skip(str(exc))


def _expected_cpu(corpus: Path, case: str, label: str) -> str:
    text = (corpus / "cases" / case / f"{case}.x86_64-{label}.args").read_text()
    line = next(line for line in text.splitlines() if line.startswith("-cpu "))
    return line.removeprefix("-cpu ").removesuffix(" \\")


@pytest.mark.parametrize(("case", "label", "caps"), [
    ("cpu-host-model-kvm", "latest", "caps_10.0.0_x86_64.xml"),
    ("cpu-host-model-kvm", "8.1.0", "caps_8.1.0_x86_64.xml"),
    ("cpu-host-model-nofallback-tcg", "latest", "caps_10.0.0_x86_64.xml"),
    ("cpu-host-model-nofallback-tcg", "7.2.0", "caps_7.2.0_x86_64.xml"),
    ("cpu-host-model-nofallback-tcg", "6.2.0", "caps_6.2.0_x86_64.xml"),
])
def test_host_model_matches_libvirt(corpus: Path, real_map: Path, case: str, label: str, caps: str) -> None:
    if not (real_map / "x86_EPYC-Rome-v1.xml").exists():
        pytest.skip(f"{real_map} is older than libvirt 11 (run `qemu-conformance builds cpu-map`)")
    argv = argv_for_file(corpus / "cases" / case / f"{case}.xml", str(corpus / "caps" / "libvirt-11.3.0" / caps))
    got = argv[argv.index("-cpu") + 1]
    assert got == _expected_cpu(corpus, case, label)


def test_kvm_and_tcg_use_their_own_host_cpu(corpus: Path, real_map: Path) -> None:
    caps_file = corpus / "caps" / "libvirt-11.3.0" / "caps_8.1.0_x86_64.xml"
    assert {h.accel for h in load_caps(str(caps_file)).host_cpus} == {"kvm", "tcg"}
    kvm = argv_for_file(corpus / "cases" / "cpu-host-model-kvm" / "cpu-host-model-kvm.xml", str(caps_file))
    cpu = kvm[kvm.index("-cpu") + 1]
    assert cpu.startswith("EPYC-Rome,") and cpu.endswith(",xsaves=off")  # xsaves blocks EPYC-Rome under KVM
    tcg = argv_for_file(corpus / "cases" / "cpu-host-model-nofallback-tcg" / "cpu-host-model-nofallback-tcg.xml",
                        str(caps_file))
    assert tcg[tcg.index("-cpu") + 1].startswith("EPYC,")


def test_stored_import_gives_the_same_cpu_as_libvirts_file(corpus: Path, real_map: Path, capsdata: Path) -> None:
    domain = corpus / "cases" / "cpu-host-model-nofallback-tcg" / "cpu-host-model-nofallback-tcg.xml"
    stored = argv_for_file(domain, str(capsdata / "qemu-8.1.0-x86_64.xml"))
    direct = argv_for_file(domain, str(corpus / "caps" / "libvirt-11.3.0" / "caps_8.1.0_x86_64.xml"))
    assert stored[stored.index("-cpu") + 1] == direct[direct.index("-cpu") + 1]


def test_probed_fixture_decodes_its_own_accelerator(capsdata: Path, real_map: Path, corpus: Path) -> None:
    caps = resolve(str(capsdata / "qemu-7.2.22-x86_64.xml"))
    host = caps.host_cpu(caps.provenance.accel or "tcg")
    assert host is not None and host.migratability and host.properties
    domain = corpus / "cases" / ("cpu-host-model-kvm" if host.accel == "kvm" else "cpu-host-model-nofallback-tcg")
    argv = argv_for_file(domain / f"{domain.name}.xml", str(capsdata / "qemu-7.2.22-x86_64.xml"))
    model = argv[argv.index("-cpu") + 1].split(",")[0]
    assert model in load_x86_map(real_map).model_by_name


# --- clear errors ----------------------------------------------------------------------------------


def test_fixture_without_host_cpu_data_says_what_to_do(corpus: Path, tmp_path: Path) -> None:
    from conformance.caps.fixture import write_fixture

    caps = resolve(str(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64.xml"))
    bare = write_fixture(replace(caps, host_cpus=()), tmp_path / "qemu-10.0.0-x86_64.xml")
    with pytest.raises(UnsupportedByQemu, match=r"host CPU expansion under KVM.*re-probe"):
        argv_for_file(corpus / "cases" / "cpu-host-model-kvm" / "cpu-host-model-kvm.xml", str(bare))


def test_tcg_domain_on_a_kvm_only_probe_names_tcg(corpus: Path, tmp_path: Path) -> None:
    from conformance.caps.fixture import write_fixture

    caps = resolve(str(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64.xml"))
    kvm_only = replace(caps, host_cpus=tuple(h for h in caps.host_cpus if h.accel == "kvm"))
    path = write_fixture(kvm_only, tmp_path / "qemu-10.0.0-x86_64.xml")
    with pytest.raises(UnsupportedByQemu, match="under TCG"):
        argv_for_file(corpus / "cases" / "cpu-host-model-nofallback-tcg" / "cpu-host-model-nofallback-tcg.xml",
                      str(path))


def test_missing_cpu_map_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cpu_map_mod.ENV_CPU_MAP, raising=False)
    monkeypatch.setattr(cpu_map_mod, "SYSTEM_CPU_MAP", tmp_path / "none")
    monkeypatch.setenv("QEMU_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UnsupportedByQemu, match=r"qemu-conformance builds cpu-map.*libvirt0"):
        find_cpu_map()
    monkeypatch.setenv(cpu_map_mod.ENV_CPU_MAP, str(tmp_path))
    with pytest.raises(UnsupportedByQemu, match=r"holds no index\.xml"):
        find_cpu_map()


def test_env_setting_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = _write(tmp_path, _map_xml(_model("A", "fa")))
    monkeypatch.setenv(cpu_map_mod.ENV_CPU_MAP, str(folder))
    assert find_cpu_map() == folder


def test_non_migratable_features_are_left_out(tmp_path: Path) -> None:
    from conformance.argv.cpu_host import migratable_host_model

    folder = _write(tmp_path, _map_xml(_model("A", "fa")))
    props = (CpuProperty("fa", "boolean", "true", True), CpuProperty("fb", "boolean", "true", False),
             CpuProperty("fc", "boolean", "true", True), CpuProperty("vendor", "string", "AuthenticAMD"))
    host = HostCpu(accel="kvm", model="base", migratability=True, properties=props)
    got = migratable_host_model(host, (CpuModel("A", accel="kvm"),), folder, False)
    assert got.model == "A" and got.features == (("fc", "require"),)
    msr = replace(host, properties=(*props, CpuProperty("msrf", "boolean", "true", True)))
    assert ("msrf", "require") in migratable_host_model(msr, None, folder, False).features
    assert ("msrf", "require") not in migratable_host_model(msr, None, folder, True).features
