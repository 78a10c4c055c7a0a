"""Storage sources (conformance/argv/storage_source.py): secrets, LUKS, reservations, slices, data stores and
network protocols, built as libvirt builds them and refused where libvirt refuses them."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

import pytest

from conformance.argv import build_argv
from conformance.argv.aes import encrypt_cbc
from conformance.argv.harness import HARNESS_MASTER_KEY, HARNESS_SECRET_IV, HARNESS_SECRET_VALUE
from conformance.domain.parse import parse_domain
from conformance.domain.semantics import validate_domain
from conformance.errors import ConformanceError


def domain(disks: str) -> str:
    return f"""<domain type='kvm'>
  <name>guest</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <memory unit='MiB'>512</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    {disks}
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <memballoon model='none'/>
  </devices>
</domain>"""


def argv_of(xml: str, caps) -> list[str]:
    dom = parse_domain(xml)
    validate_domain(dom, caps)
    return build_argv(dom, caps)


def without(caps, flag: str):
    """The same capabilities less one flag (a QEMU that lacks the feature)."""
    less = replace(caps)
    less.__dict__["flags"] = caps.flags - {flag}  # flags is a cached property: seed it
    assert not less.has(flag) and caps.has(flag)
    return less


def objects(argv: list[str], name: str) -> list[dict]:
    return [json.loads(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == name]


def test_aes_matches_the_standard_and_the_harness_secret() -> None:
    # FIPS-197 appendix C.3 (AES-256): one block, CBC with a zero IV is the plain cipher; the padding block follows
    key = bytes(range(32))
    out = encrypt_cbc(bytes.fromhex("00112233445566778899aabbccddeeff"), key, bytes(16))
    assert out[:16].hex() == "8ea2b7ca516745bfeafc49904b496089"
    # what libvirt's test harness writes for every secret (the fake secret driver's value, its fixed key and IV)
    assert base64.b64encode(encrypt_cbc(HARNESS_SECRET_VALUE, HARNESS_MASTER_KEY, HARNESS_SECRET_IV)).decode() == \
        "9eao5F8qtkGt+seB1HYivWIxbtwUu6MQtg1zpj/oDtUsPr1q8wBYM91uEHCn6j/1"
    with pytest.raises(ValueError):
        encrypt_cbc(b"x", bytes(16), bytes(16))


ISCSI_AUTH = """<disk type='network' device='disk'>
  <driver name='qemu' type='raw'/>
  <source protocol='iscsi' name='iqn.1992-01.com.example:storage/1'>
    <host name='example.org' port='6000'/>
    <initiator><iqn name='iqn.1992-01.com.example:client'/></initiator>
    <auth username='myname'><secret type='{kind}' usage='mycluster_myname'/></auth>
  </source>
  <target dev='vda' bus='virtio'/>
</disk>"""


def test_iscsi_auth_is_a_secret_object_the_node_names(caps_10) -> None:
    argv = argv_of(domain(ISCSI_AUTH.format(kind="iscsi")), caps_10)
    secrets = [o for o in objects(argv, "-object") if o["qom-type"] == "secret"]
    assert [s["id"] for s in secrets] == ["masterKey0", "libvirt-1-storage-auth-secret0"]
    assert secrets[1]["keyid"] == "masterKey0" and secrets[1]["format"] == "base64"
    (node,) = objects(argv, "-blockdev")
    assert node["user"] == "myname" and node["password-secret"] == "libvirt-1-storage-auth-secret0"
    assert node["initiator-name"] == "iqn.1992-01.com.example:client" and node["lun"] == 1
    assert argv.index("-object", argv.index("-object") + 1) < argv.index("-blockdev")  # the secret first


@pytest.mark.parametrize(("kind", "message"), [("ceph", "invalid secret type 'ceph'"),
                                               ("", "unknown secret type '<null>'")])
def test_iscsi_auth_with_the_wrong_secret_type_is_refused(caps_10, kind: str, message: str) -> None:
    xml = ISCSI_AUTH.format(kind=kind).replace("type='' ", "")
    with pytest.raises(ConformanceError, match=message):
        argv_of(domain(xml), caps_10)


LUKS = """<disk type='file' device='disk'>
  <driver name='qemu' type='{fmt}'/>
  <source file='/images/a.img'>
    <encryption format='luks'><secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/>{extra}
    </encryption>
  </source>
  <target dev='vda' bus='virtio'/>
</disk>"""


def test_luks_raw_is_a_luks_layer_and_qcow2_an_encrypt_option(caps_10) -> None:
    raw = objects(argv_of(domain(LUKS.format(fmt="raw", extra="")), caps_10), "-blockdev")
    assert raw[1]["driver"] == "luks" and raw[1]["key-secret"] == "libvirt-1-format-encryption-secret0"
    qcow2 = objects(argv_of(domain(LUKS.format(fmt="qcow2", extra="")), caps_10), "-blockdev")
    assert qcow2[1]["driver"] == "qcow2"
    assert qcow2[1]["encrypt"] == {"format": "luks", "key-secret": "libvirt-1-format-encryption-secret0"}


@pytest.mark.parametrize(("fmt", "extra", "message"), [
    ("vmdk", "", "encryption is supported only with 'raw' and 'qcow2'"),
    ("raw", "<cipher name='serpent' size='256' mode='cbc' hash='sha256'/>", "supplying <cipher>"),
])
def test_luks_refusals(caps_10, fmt: str, extra: str, message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        argv_of(domain(LUKS.format(fmt=fmt, extra=extra)), caps_10)


@pytest.mark.parametrize(("encryption", "fmt", "message"), [
    ("<encryption format='qcow'><secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/>"
     "</encryption>", "qcow2", "old qcow/qcow2 encryption is not supported"),
    ("<encryption format='luks2'><secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/>"
     "</encryption>", "raw", "'luks2' is currently not supported by the qemu encryption engine"),
    ("<encryption format='luks'><secret type='passphrase' usage='a'/><secret type='passphrase' usage='b'/>"
     "</encryption>", "raw", "qemu encryption engine expects only a single secret"),
    ("<encryption format='luks'/>", "raw", "missing secret info for 'luks' driver"),
    ("<encryption format='luks' engine='librbd'><secret type='passphrase' usage='a'/></encryption>", "raw",
     "librbd encryption is supported only with RBD backed disks"),
])
def test_encryption_refusals_in_libvirts_words(caps_10, encryption: str, fmt: str, message: str) -> None:
    xml = domain(f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/><source file='/i.img'>"
                 f"{encryption}</source><target dev='vda' bus='virtio'/></disk>")
    with pytest.raises(ConformanceError, match=re.escape(message)):
        argv_of(xml, caps_10)


def test_a_qcow2_luks_image_without_a_secret_gets_no_encrypt_option_as_in_libvirt(caps_10) -> None:
    xml = domain("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i.img'>"
                 "<encryption format='luks'/></source><target dev='vda' bus='virtio'/></disk>")
    argv = argv_of(xml, caps_10)
    assert "encrypt" not in objects(argv, "-blockdev")[1]
    assert not any(o["qom-type"] == "secret" for o in objects(argv, "-object"))


PR = """<disk type='block' device='{device}'>
  <driver name='qemu' type='raw'/>
  <source dev='/dev/sdb'>{reservations}</source>
  <target dev='sda' bus='scsi'/>
</disk>"""


def test_managed_reservations_share_one_helper_and_unmanaged_get_their_own(caps_10) -> None:
    managed = "<reservations managed='yes'/>"
    unmanaged = ("<reservations managed='no'><source type='unix' path='/run/pr.sock' mode='client'/>"
                 "</reservations>")
    xml = domain(PR.format(device="lun", reservations=managed)
                 + PR.format(device="lun", reservations=unmanaged).replace("sda", "sdb").replace("sdb'", "sdc'"))
    argv = argv_of(xml, caps_10)
    helpers = [o for o in objects(argv, "-object") if o["qom-type"] == "pr-manager-helper"]
    assert helpers == [
        {"qom-type": "pr-manager-helper", "id": "pr-helper0",
         "path": "/var/lib/libvirt/qemu/domain--1-guest/pr-helper0.sock"},
        {"qom-type": "pr-manager-helper", "id": "pr-helper-libvirt-1-storage", "path": "/run/pr.sock"},
    ]
    assert [n["pr-manager"] for n in objects(argv, "-blockdev")] == ["pr-helper0", "pr-helper-libvirt-1-storage"]


@pytest.mark.parametrize(("device", "reservations", "message"), [
    ("disk", "<reservations managed='yes'/>", "allowed only for lun devices"),
    ("lun", "<reservations managed='no'><source type='unix' path='/run/pr.sock' mode='server'/></reservations>",
     "server"),
])
def test_reservations_refusals(caps_10, device: str, reservations: str, message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        argv_of(domain(PR.format(device=device, reservations=reservations)), caps_10)


def test_reservations_need_the_helper_in_qemu(caps_10) -> None:
    caps = without(caps_10, "pr-manager-helper")
    with pytest.raises(ConformanceError, match="reservations not supported with this QEMU"):
        argv_of(domain(PR.format(device="lun", reservations="<reservations managed='yes'/>")), caps)


def test_reservations_on_an_iscsi_lun_build_the_helper_the_iscsi_node_does_not_take(caps_10) -> None:
    """libvirt accepts <reservations> on an iSCSI LUN: the helper object is built, the iscsi node has no
    pr-manager (only qemuBlockStorageSourceGetFileProps takes one)."""
    xml = domain("<disk type='network' device='lun'><driver name='qemu' type='raw'/>"
                 "<source protocol='iscsi' name='iqn.2013-07.com.example:t/1'><host name='h'/>"
                 "<reservations managed='no'><source type='unix' path='/run/pr.sock' mode='client'/></reservations>"
                 "</source><target dev='sda' bus='scsi'/></disk>")
    argv = argv_of(xml, caps_10)
    assert {"qom-type": "pr-manager-helper", "id": "pr-helper-libvirt-1-storage", "path": "/run/pr.sock"} in \
        objects(argv, "-object")
    (node,) = objects(argv, "-blockdev")
    assert node["driver"] == "iscsi" and "pr-manager" not in node


@pytest.mark.parametrize(("disk", "message"), [
    ("<disk type='network' device='lun'><driver name='qemu' type='raw'/><source protocol='nbd' name='e'>"
     "<host name='h'/></source><target dev='sda' bus='scsi'/></disk>",
     "disk device='lun' is not supported for protocol='nbd'"),
    ("<disk type='file' device='lun'><driver name='qemu' type='raw'/><source file='/i.img'/>"
     "<target dev='vda' bus='virtio'/></disk>", "disk device='lun' is only valid for block type disk source"),
    ("<disk type='block' device='lun'><driver name='qemu' type='qcow2'/><source dev='/dev/sdb'/>"
     "<target dev='sda' bus='scsi'/></disk>", "disk device 'lun' must use 'raw' format"),
    ("<disk type='block' device='lun'><driver name='qemu' type='raw'/><source dev='/dev/sdb'><encryption "
     "format='luks'><secret type='passphrase' usage='a'/></encryption></source><target dev='sda' bus='scsi'/>"
     "</disk>", "disk device 'lun' doesn't support encryption"),
])
def test_lun_sources_are_refused_in_libvirts_words(caps_10, disk: str, message: str) -> None:
    with pytest.raises(ConformanceError, match=re.escape(message)):
        argv_of(domain(disk), caps_10)


DATA_STORE = """<disk type='file' device='disk'>
  <driver name='qemu' type='{fmt}'/>
  <source file='/images/top.qcow2'>
    <dataStore type='file'><format type='raw'/><source file='/images/top.data'/></dataStore>
  </source>
  <target dev='vda' bus='virtio'/>
</disk>"""


def test_a_data_store_is_a_raw_storage_node_numbered_after_its_image(caps_10) -> None:
    xml = domain(DATA_STORE.format(fmt="qcow2") + "<disk type='file' device='disk'><source file='/images/b.raw'/>"
                 "<target dev='vdb' bus='virtio'/></disk>")
    nodes = objects(argv_of(xml, caps_10), "-blockdev")
    data, storage, fmt = nodes[:3]
    assert data == {"driver": "file", "filename": "/images/top.data", "node-name": "libvirt-3-storage",
                    "read-only": False}
    assert storage["node-name"] == "libvirt-2-storage"
    assert fmt["data-file"] == "libvirt-3-storage" and fmt["file"] == "libvirt-2-storage"
    assert nodes[3]["node-name"] == "libvirt-1-storage"  # the next disk: the data store took an index


def test_a_data_store_needs_a_qcow2_image(caps_10) -> None:
    with pytest.raises(ConformanceError, match="only with qcow2 images"):
        argv_of(domain(DATA_STORE.format(fmt="raw")), caps_10)


def test_a_slice_is_a_raw_node_between_storage_and_format(caps_10) -> None:
    xml = domain("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i.img'>"
                 "<slices><slice type='storage' offset='512' size='1024'/></slices></source>"
                 "<target dev='vda' bus='virtio'/></disk>")
    storage, sliced, fmt = objects(argv_of(xml, caps_10), "-blockdev")
    assert sliced == {"driver": "raw", "file": "libvirt-1-storage", "offset": 512, "size": 1024,
                      "node-name": "libvirt-1-slice-sto", "auto-read-only": True, "discard": "unmap"}
    assert fmt["file"] == "libvirt-1-slice-sto" and storage["auto-read-only"] is True


def test_http_options_cookies_and_query(caps_10) -> None:
    xml = domain("<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                 "<source protocol='https' name='p/d.img' query='a=b'><host name='h.example' port='8443'/>"
                 "<ssl verify='no'/><cookies><cookie name='c1'>v1</cookie><cookie name='c2'>v2</cookie></cookies>"
                 "<readahead size='65536'/><timeout seconds='10'/></source><target dev='vda' bus='virtio'/></disk>")
    argv = argv_of(xml, caps_10)
    (node,) = objects(argv, "-blockdev")
    assert node["url"] == "https://h.example:8443/p/d.img?a=b"
    assert (node["sslverify"], node["readahead"], node["timeout"]) == (False, 65536, 10)
    cookie = next(o for o in objects(argv, "-object") if o["id"] == node["cookie-secret"])
    assert base64.b64decode(cookie["data"]) == encrypt_cbc(b"c1=v1; c2=v2", HARNESS_MASTER_KEY, HARNESS_SECRET_IV)


def test_options_another_protocol_does_not_read_are_ignored_as_libvirt_ignores_them(caps_10) -> None:
    """libvirt's parser reads <cookies> and query= for HTTP(S) only, <ssl> for HTTPS/FTPS, <snapshot>/<config> are
    used by RBD only, <initiator> by iSCSI only: elsewhere accepted and left out of the node, never refused."""
    xml = domain("<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                 "<source protocol='ftp' name='d.img' query='a=b'><host name='h'/>"
                 "<cookies><cookie name='c'>v</cookie></cookies><ssl verify='no'/></source>"
                 "<target dev='vda' bus='virtio'/></disk>"
                 "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                 "<source protocol='nbd' name='e'><host name='h'/><snapshot name='s'/><config file='/c'/>"
                 "<initiator><iqn name='iqn.2013-07.com.example:client'/></initiator></source>"
                 "<target dev='vdb' bus='virtio'/></disk>")
    argv = argv_of(xml, caps_10)
    ftp, nbd = objects(argv, "-blockdev")
    assert ftp["url"] == "ftp://h:21/d.img" and not {"cookie-secret", "sslverify"} & ftp.keys()
    assert not any(o["qom-type"] == "secret" for o in objects(argv, "-object"))
    assert nbd == {"driver": "nbd", "server": {"type": "inet", "host": "h", "port": "10809"}, "export": "e",
                   "node-name": "libvirt-1-storage", "read-only": False}


@pytest.mark.parametrize(("source", "message"), [
    # qemuDomainPrepareStorageSourceTLS
    ("<source protocol='http' name='d.img' tls='yes'><host name='h'/></source>",
     "TLS transport is not supported for disk protocol 'http'"),
    # virDomainDiskDefValidateSourceChainOne: the protocol first, then the secret's usage type
    ("<source protocol='nbd' name='e'><host name='h'/><auth username='u'><secret type='iscsi' usage='x'/></auth>"
     "</source>", "authentication is not supported for protocol 'nbd'"),
    ("<source protocol='iscsi' name='iqn.2013-07.com.example:t/0'><host name='h'/><auth username='u'>"
     "<secret type='ceph' usage='x'/></auth></source>", "invalid secret type 'ceph'"),
])
def test_protocol_refusals_in_libvirts_words(caps_10, source: str, message: str) -> None:
    xml = domain(f"<disk type='network' device='disk'><driver name='qemu' type='raw'/>{source}"
                 "<target dev='vda' bus='virtio'/></disk>")
    with pytest.raises(ConformanceError, match=re.escape(message)):
        argv_of(xml, caps_10)


def test_rbd_and_nfs_nodes(caps_10) -> None:
    xml = domain("<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                 "<source protocol='rbd' name='pool/image'><host name='mon1' port='6321'/><host name='mon2'/>"
                 "<snapshot name='snap'/><config file='/etc/ceph.conf'/>"
                 "<auth username='admin'><secret type='ceph' usage='c'/></auth></source>"
                 "<target dev='vda' bus='virtio'/></disk>"
                 "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                 "<source protocol='nfs' name='/export/d.img'><host name='nfs.example'/>"
                 "<identity user='+107' group='+108'/></source><target dev='vdb' bus='virtio'/></disk>")
    rbd, nfs = objects(argv_of(xml, caps_10), "-blockdev")
    assert rbd["server"] == [{"host": "mon1", "port": "6321"}, {"host": "mon2", "port": "6789"}]
    assert (rbd["pool"], rbd["image"], rbd["snapshot"], rbd["conf"]) == ("pool", "image", "snap", "/etc/ceph.conf")
    assert rbd["auth-client-required"] == ["cephx", "none"] and rbd["key-secret"].endswith("-auth-secret0")
    assert nfs == {"driver": "nfs", "server": {"host": "nfs.example", "type": "inet"}, "path": "/export/d.img",
                   "user": 107, "group": 108, "node-name": "libvirt-1-storage", "read-only": False}


def test_nvme_needs_the_capability(caps_10) -> None:
    xml = domain("<disk type='nvme' device='disk'><driver name='qemu' type='raw'/>"
                 "<source type='pci' managed='yes' namespace='2'>"
                 "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>"
                 "<target dev='vda' bus='virtio'/></disk>")
    (node,) = objects(argv_of(xml, caps_10), "-blockdev")
    assert (node["driver"], node["device"], node["namespace"]) == ("nvme", "0000:01:00.0", 2)
    caps = without(caps_10, "drive-nvme")
    with pytest.raises(ConformanceError, match="NVMe disks are not supported"):
        argv_of(xml, caps)


def test_a_network_nvram_is_pflash1_from_its_source_not_a_generated_file(caps_10) -> None:
    xml = domain("").replace(
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>",
        "<os><type arch='x86_64' machine='pc'>hvm</type>"
        "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
        "<nvram type='network'><source protocol='iscsi' name='iqn.2013-07.com.example:nv'>"
        "<host name='example.com' port='6000'/><auth username='me'><secret type='iscsi' usage='u'/></auth>"
        "</source></nvram></os><features><acpi/></features>")
    argv = argv_of(xml, caps_10)
    pflash1 = next(n for n in objects(argv, "-blockdev") if n["node-name"] == "libvirt-pflash1-storage")
    assert (pflash1["driver"], pflash1["portal"], pflash1["user"]) == ("iscsi", "example.com:6000", "me")
    assert any(o["id"] == pflash1["password-secret"] for o in objects(argv, "-object"))
    assert "_VARS" not in " ".join(argv)  # no local variable store was made up


def test_an_sd_card_on_network_storage_is_a_flattened_drive(caps_10) -> None:
    from conformance.argv.disk import _flat

    assert _flat("file", {"driver": "gluster", "server": [{"type": "inet", "host": "h", "port": "24007"},
                                                          {"type": "unix", "path": "/s,x"}], "debug": 4}) == [
        "file.driver=gluster", "file.server.0.type=inet", "file.server.0.host=h", "file.server.0.port=24007",
        "file.server.1.type=unix", "file.server.1.path=/s,,x", "file.debug=4"]


def test_ssh_uses_qemus_driver_and_refuses_what_needs_nbdkit(caps_10) -> None:
    disk = ("<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
            "<source protocol='ssh' name='test.img'><host name='example.org'/>{extra}"
            "<knownHosts path='/k'/></source><target dev='vda' bus='virtio'/></disk>")
    (node,) = objects(argv_of(domain(disk.format(extra="")), caps_10), "-blockdev")
    assert (node["driver"], node["path"], node["server"]) == ("ssh", "test.img", {"host": "example.org",
                                                                                  "port": "22"})
    with pytest.raises(ConformanceError, match="nbdkit"):
        argv_of(domain(disk.format(extra="<auth username='u'><secret type='iscsi' usage='x'/></auth>")), caps_10)
