"""The libvirt oracle's written rules and helpers, without a libvirtd (the live side:
tests/live/test_libvirt_oracle.py)."""

from __future__ import annotations

import json

import pytest

from conformance.libvirt_oracle import (
    EMULATED,
    HARNESS_GENID,
    PARITY_EXPLAINED,
    PARITY_KINDS,
    RULES,
    START_TIME,
    VERSION,
    ParityOutcome,
    first_difference,
    libvirt_message,
    normalise,
    parity_report,
    version_tuple,
    with_guest_kernel,
)

# one (suite, libvirt 9.0) pair per rule, each identical once that rule (and only it) has run
EXAMPLES = {
    "management-options": (
        ["q", "-machine", "pc"],
        ["q", "-name", "guest=g,debug-threads=on", "-S", "-object",
         '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/d/master-key.aes"}',
         "-machine", "pc", "-chardev", "socket,id=charmonitor,fd=29,server=on,wait=off", "-mon",
         "chardev=charmonitor,id=monitor,mode=control", "-sandbox", "on,obsolete=deny", "-msg", "timestamp=on"]),
    "memory-size-keyword": (["q", "-m", "size=262144k"], ["q", "-m", "256"]),
    "itco-watchdog": (["q", "-global", "ICH9-LPC.noreboot=off", "-watchdog-action", "reset"], ["q"]),
    "smp-clusters": (["q", "-smp", "4,sockets=2,dies=1,clusters=1,cores=2,threads=1"],
                     ["q", "-smp", "4,sockets=2,dies=1,cores=2,threads=1"]),
    "blockdev-key-order": (["q", "-blockdev", '{"driver":"file","auto-read-only":true,"cache":{"direct":true}}'],
                           ["q", "-blockdev", '{"driver":"file","cache":{"direct":true},"auto-read-only":true}']),
    "probed-backing-null": (["q", "-blockdev", '{"node-name":"f","driver":"qcow2","file":"s"}'],
                            ["q", "-blockdev", '{"node-name":"f","driver":"qcow2","file":"s","backing":null}']),
    "passed-fd-numbers": (["q", "-chardev", "socket,id=c,fd=1729,server=on,wait=off"],
                          ["q", "-chardev", "socket,id=c,fd=31,server=on,wait=off"]),
    "tcg-tap-without-vhost": (["q", "-accel", "tcg", "-netdev", '{"type":"tap","fd":"N","vhost":true,"vhostfd":"44",'
                               '"id":"hostnet0"}'],
                              ["q", "-accel", "tcg", "-netdev", '{"type":"tap","fd":"N","id":"hostnet0"}']),
    "generated-genid": (["q", "-device", f'{{"driver":"vmgenid","guid":"{HARNESS_GENID}","id":"vmgenid0"}}'],
                        ["q", "-device", '{"driver":"vmgenid","guid":"11dd7784-6bc9-4acf-84a0-19d83d68ade7",'
                         '"id":"vmgenid0"}']),
}


def test_every_rule_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(r.name for r in RULES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_rule_makes_its_example_identical(name: str) -> None:
    suite, real = EXAMPLES[name]
    assert first_difference(suite, real) is not None
    a, b, applied = normalise(suite, real, "9.0.0")
    assert first_difference(a, b) is None, (a, b)
    assert name in applied


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_rule_names_its_release_and_what_it_normalises(rule) -> None:
    assert rule.kind in ("version", "harness", "scope")
    assert len(rule.normalises) > 40
    if rule.kind == "version":  # holds for the host's 9.0, not for a host that runs the emulated release
        assert version_tuple(rule.libvirt.removeprefix("<=")) <= version_tuple(EMULATED)
        assert rule.applies("9.0.0") and not rule.applies(EMULATED)
    else:
        assert rule.applies(EMULATED) and rule.libvirt == "every release"


def test_a_version_rule_does_not_hide_a_difference_on_a_newer_host() -> None:
    suite, real = EXAMPLES["memory-size-keyword"]
    a, b, applied = normalise(suite, real, EMULATED)
    assert first_difference(a, b) == (2, "size=262144k", "256") and applied == []


def test_tap_rule_keeps_vhost_of_a_kvm_domain() -> None:
    suite = ["q", "-accel", "kvm", "-netdev", '{"type":"tap","fd":"N","vhost":true,"vhostfd":"44","id":"hostnet0"}']
    real = ["q", "-accel", "kvm", "-netdev", '{"type":"tap","fd":"N","id":"hostnet0"}']
    a, b, _ = normalise(suite, real, "9.0.0")
    assert first_difference(a, b) is not None


def test_itco_keeps_the_action_of_another_watchdog() -> None:
    suite = ["q", "-global", "ICH9-LPC.noreboot=off", "-watchdog-action", "reset"]
    real = ["q", "-watchdog-action", "reset"]
    a, b, _ = normalise(suite, real, "9.0.0")
    assert a == b == ["q", "-watchdog-action", "reset"]


def test_first_difference_reports_the_token_and_the_end() -> None:
    assert first_difference(["a", "b"], ["a", "c"]) == (1, "b", "c")
    assert first_difference(["a"], ["a", "b"]) == (1, "<end>", "b")
    assert first_difference(["a"], ["a"]) is None


def test_libvirt_message_is_libvirts_error_on_one_line() -> None:
    stderr = ("error: Failed to define domain from /tmp/x.xml\n"
              "error: unsupported configuration: non unique alias detected: ua-x\n\n")
    assert libvirt_message(stderr) == "unsupported configuration: non unique alias detected: ua-x"


def test_guest_kernel_goes_into_os() -> None:
    xml = "<domain><os><type>hvm</type><cmdline>old</cmdline></os></domain>"
    out = with_guest_kernel(xml, "/k", "/i", "console=ttyS0")
    assert "<kernel>/k</kernel>" in out and "<initrd>/i</initrd>" in out and "<cmdline>console=ttyS0</cmdline>" in out
    assert "old" not in out


# --- corpus parity's verdicts ------------------------------------------------------------------------------


def test_parity_report_counts_the_unexplained_disagreements() -> None:
    found = [
        ParityOutcome("fine", "", "", ["argv"]),
        ParityOutcome("shmem-small-size", "", "<shmem>: XML error: shmem size must be a power of 2 and ...", ["error"],
                      start="XML error: shmem size must be at least 1 MiB (1024 KiB)"),
        ParityOutcome("net-usb", "internal error: Cannot automatically add a new PCI bus ...", "", ["argv"]),
        ParityOutcome("new-one", "", "<disk>: some new refusal", ["argv"], start=""),
        # an explained domain refused for another reason now: the verdict no longer fits
        ParityOutcome("disk-scsi", "", "<disk>: another refusal", ["argv"]),
        # an explained domain that now agrees: its entry is stale
        ParityOutcome("memory-align-fail", "x", "y", ["error"]),
    ]
    lines, unexplained = parity_report(found)
    assert unexplained == 2
    assert lines[-1] == "4 disagreements: 2 explained (2 version), 2 unexplained"
    assert "stale in PARITY_EXPLAINED (now agrees): memory-align-fail" in lines
    new = next(line for line in lines if "new-one" in line)
    assert "UNEXPLAINED" in new and "pretend start: builds" in new
    assert "UNEXPLAINED" in next(line for line in lines if "disk-scsi" in line)
    assert "9.0 only when starting" in next(line for line in lines if "shmem-small-size" in line)


@pytest.mark.parametrize("case", sorted(PARITY_EXPLAINED))
def test_parity_verdict_is_complete(case: str) -> None:
    verdict = PARITY_EXPLAINED[case]
    assert verdict.kind in PARITY_KINDS
    assert len(verdict.refusal) >= 5 and len(verdict.reason) > 20


def test_parity_verdicts_agree_with_libvirts_own_tests() -> None:
    """Against libvirt 11.3's corpus: a start-time verdict is a case libvirt's tests parse and validate (an
    xml2xml output) but fail to build (an error output, DO_TEST_CAPS_LATEST_FAILURE); a version verdict on a
    refusal 11.3 expects is a parse error there (an error output, no xml2xml); and 11.3's error is the refusal
    the verdict names, so the suite refuses what 11.3 refuses."""
    from conformance.paths import libvirt_corpus_dir

    corpus = libvirt_corpus_dir()
    if not (corpus / "index.json").exists():
        pytest.skip(f"no libvirt corpus at {corpus}")
    index = {c["name"]: c for c in json.loads((corpus / "index.json").read_text())["cases"]}
    checked = 0
    for case, verdict in PARITY_EXPLAINED.items():
        assert case in index, f"{case}: not a case of libvirt's corpus"
        outputs = [o for v in index[case]["variants"] if v["tree"] == "libvirt-11.3.0" for o in v["outputs"]
                   if o["arch"] == "x86_64"]
        kinds = {o["kind"] for o in outputs}
        if verdict.kind == START_TIME:
            assert kinds == {"error", "xml2xml"}, case
        if "error" not in kinds:
            continue
        if verdict.kind == VERSION:
            assert kinds == {"error"}, case
        err = next(o for o in outputs if o["kind"] == "error")
        assert verdict.refusal in (corpus / err["file"]).read_text(), case
        checked += 1
    assert checked >= 12


def test_spice_tls_is_on_with_certificates_made_in_the_private_root(tmp_path) -> None:
    """qemu.conf turns spice_tls on, as libvirt's harness does, with a certificate folder inside the private
    root (/etc/libvirt is bind-mounted from it): the corpus's SPICE TLS domains define, and the certificates
    made for the run verify against their CA."""
    import shutil
    import subprocess

    from conformance.libvirt_oracle import QEMU_CONF, SPICE_TLS_DIR, make_test_certificates

    assert "spice_tls = 1" in QEMU_CONF and f'spice_tls_x509_cert_dir = "/etc/libvirt/{SPICE_TLS_DIR}"' in QEMU_CONF
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    folder = tmp_path / "etc" / SPICE_TLS_DIR
    make_test_certificates(folder)
    assert {"ca-cert.pem", "server-cert.pem", "server-key.pem"} <= {p.name for p in folder.iterdir()}
    verified = subprocess.run(["openssl", "verify", "-CAfile", "ca-cert.pem", "server-cert.pem"], cwd=folder,
                              capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
