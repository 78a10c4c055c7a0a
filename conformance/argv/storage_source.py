"""A disk image's storage source beyond its path: network protocols and their options, authentication, LUKS
encryption, persistent reservations, storage slices and qcow2 data stores.

libvirt turns each storage source (a disk's image, every <backingStore> layer, a qcow2 <dataStore>) into a
storage node (qemuBlockStorageSourceGetBackendProps) and, unless raw, a format node
(qemuBlockStorageSourceGetBlockdevProps). What a node refers to by name (a secret, TLS credentials, a
persistent-reservation helper) is an -object written just before it (qemuBuildStorageSourceAttachPrepareCommon,
qemuBlockStorageSourceAttachApplyStorageDeps). Secrets are passed encrypted with the domain's master key
(qemuDomainSecretAESSetup); the values are those of libvirt's test harness (harness.py).

The checks are libvirt's (domain_validate.c, qemu_validate.c, qemu_domain.c): a source it refuses is refused
here with its reason; the rest of disk.py builds the nodes in libvirt's order.
"""

from __future__ import annotations

import base64
import grp
import ipaddress
import pwd
from typing import Any

from lxml import etree

from conformance.argv.aes import encrypt_cbc
from conformance.argv.context import Ctx
from conformance.argv.harness import (
    HARNESS_MASTER_KEY,
    HARNESS_SECRET_IV,
    HARNESS_SECRET_VALUE,
    MASTER_KEY_ALIAS,
    domain_dir,
)
from conformance.domain.model import Disk, DiskSource
from conformance.errors import DomainInvalid, UnsupportedByQemu

# virStorageSourceNetworkDefaultPort
DEFAULT_PORTS = {"nbd": "10809", "iscsi": "3260", "rbd": "6789", "gluster": "24007", "http": "80", "https": "443",
                 "ftp": "21", "ftps": "990", "tftp": "69", "ssh": "22", "sheepdog": "7000", "vxhs": "9999"}
CURL_PROTOCOLS = ("http", "https", "ftp", "ftps", "tftp")
GLUSTER_DEBUG_LEVEL = 4  # qemu.conf's gluster_debug_level default: the harness keeps it
NBD_TLS_X509_DIR = "/etc/pki/libvirt-nbd"  # qemu.conf's nbd_tls_x509_cert_dir (default_tls_x509_cert_dir/-nbd)
# the harness's qemu.conf names a secret for the NBD client certificate's key (nbd_tls_x509_secret_uuid): libvirt
# then gives the TLS object a passwordid
NBD_TLS_X509_SECRET = True
MANAGED_PR_ALIAS = "pr-helper0"  # qemuDomainGetManagedPRAlias


def child(el: etree._Element | DiskSource | None, tag: str) -> etree._Element | None:
    if el is None:
        return None
    children = el.children if isinstance(el, DiskSource) else el
    return next((c for c in children if getattr(c, "tag", None) == tag), None)


def _fail(ctx: Ctx, disk: Disk, message: str, *, unsupported: bool = False) -> None:
    where = f"<disk target='{disk.target_dev}'>" if disk.target_dev else "<nvram>"
    raise (UnsupportedByQemu if unsupported else DomainInvalid)(f"{where}: {message}", path=ctx.domain.source,
                                                                line=disk.line)


# --- what a source carries ---------------------------------------------------------------------


def auth_of(ctx: Ctx, disk: Disk, top: bool) -> etree._Element | None:
    """<auth> of the source, or for the top image the disk's own (the older place); not both
    (virDomainDiskDefParseSourceXML)."""
    inner = child(disk.source, "auth")
    outer = next((e for e in disk.extra if getattr(e, "tag", None) == "auth"), None) if top else None
    if inner is not None and outer is not None:
        _fail(ctx, disk, "unsupported configuration: an <auth> definition already found for disk source")
    return inner if inner is not None else outer


def encryption_of(ctx: Ctx, disk: Disk, top: bool) -> etree._Element | None:
    inner = child(disk.source, "encryption")
    outer = next((e for e in disk.extra if getattr(e, "tag", None) == "encryption"), None) if top else None
    if inner is not None and outer is not None:
        _fail(ctx, disk, "unsupported configuration: an <encryption> definition already found for disk source")
    return inner if inner is not None else outer


def qemu_luks(enc: etree._Element | None) -> bool:
    """LUKS that QEMU decrypts (engine qemu, the default): a luks format layer or qcow2's encrypt option."""
    return enc is not None and enc.get("format") == "luks" and enc.get("engine", "qemu") == "qemu"


def data_store(disk: Disk) -> Disk | None:
    """A qcow2 image's <dataStore> (its external data file) as a raw, storage-only source of its own that keeps
    the image's cache, io and discard modes and read-only state."""
    el = child(disk.source, "dataStore")
    if el is None:
        return None
    source = DiskSource.of(el.find("source"))
    fmt = el.find("format")
    driver = {k: v for k, v in disk.driver.items() if k in ("name", "cache", "io", "discard")}
    driver["type"] = fmt.get("type", "raw") if fmt is not None else "raw"
    return Disk(type=el.get("type", "file"), device=disk.device, source=source, driver=driver,
                target_dev=disk.target_dev, target_bus=disk.target_bus, readonly=disk.readonly, line=el.sourceline)


def nvram_source(ctx: Ctx) -> Disk | None:
    """<os><nvram type='network'|'block'> as a storage source of its own (the variable store on a host block
    device or on network storage); None for a local file (firmware.py picks or generates its path)."""
    root = ctx.domain.xml
    el = root.find("os/nvram") if root is not None else None
    if el is None or el.get("type") not in ("network", "block"):
        return None
    source = DiskSource.of(el.find("source"))
    return Disk(type=el.get("type", ""), device="disk", source=source, driver={"type": el.get("format", "raw")},
                target_dev="", line=el.sourceline)


def slice_of(disk: Disk) -> etree._Element | None:
    """The storage slice (<slices><slice type='storage'>): the image is a window of the storage."""
    return child(child(disk.source, "slices"), "slice")


def reservations_of(disk: Disk) -> etree._Element | None:
    return child(disk.source, "reservations")


def uses_managed_pr(disks: list[Disk]) -> bool:
    return any((r := reservations_of(d)) is not None and r.get("managed") == "yes" for d in disks)


# --- libvirt's checks ----------------------------------------------------------------------------


def validate(ctx: Ctx, disk: Disk, top: bool) -> None:
    """The refusals of virDomainDiskDefValidateSourceChainOne, qemuDomainValidateStorageSource and the
    source parsers for one storage source."""
    src = disk.source
    if src is None:
        return
    protocol = src.attrs.get("protocol", "") if disk.type == "network" else ""
    auth = auth_of(ctx, disk, top)
    if auth is not None and protocol == "ssh":
        _fail(ctx, disk, "unsupported configuration: an ssh disk with a password is built by nbdkit, which the "
                         "suite does not model (qemu.conf storage_use_nbdkit)", unsupported=True)
    if auth is not None and disk.type == "network":  # virDomainDiskDefValidateSourceChainOne: network sources only
        if protocol not in ("iscsi", "rbd", *CURL_PROTOCOLS):
            _fail(ctx, disk, f"unsupported configuration: authentication is not supported for protocol '{protocol}'")
        secret = auth.find("secret")
        kind = secret.get("type") if secret is not None else None
        if kind not in ("none", "volume", "ceph", "iscsi", "tls", "vtpm"):  # virSecretUsageType's names
            _fail(ctx, disk, f"unsupported configuration: unknown secret type '{kind or '<null>'}'")
        wanted = {"iscsi": "iscsi", "rbd": "ceph"}.get(protocol)
        if wanted and kind != wanted:
            _fail(ctx, disk, f"unsupported configuration: invalid secret type '{kind}'")
    enc = encryption_of(ctx, disk, top)
    if enc is not None:
        _validate_encryption(ctx, disk, enc, protocol)
    pr = reservations_of(disk)
    if pr is not None:
        if disk.device != "lun":
            _fail(ctx, disk, "unsupported configuration: <reservations/> allowed only for lun devices")
        if not ctx.caps.has("pr-manager-helper"):
            _fail(ctx, disk, "unsupported configuration: reservations not supported with this QEMU binary",
                  unsupported=True)
        if pr.get("managed") != "yes":  # virStorageSourcePRDefParseXML
            psrc = pr.find("source")
            for attr in ("type", "path", "mode"):
                if psrc is None or not psrc.get(attr):
                    _fail(ctx, disk, f"missing connection {attr} for <reservations/>")
            assert psrc is not None
            if psrc.get("type") != "unix":
                _fail(ctx, disk, f"unsupported connection type for <reservations/>: {psrc.get('type')}")
            if psrc.get("mode") != "client":
                _fail(ctx, disk, f"unsupported connection mode for <reservations/>: {psrc.get('mode')}")
    sl = slice_of(disk)
    if sl is not None and (sl.get("offset") is None or sl.get("size") is None or sl.get("type") != "storage"):
        _fail(ctx, disk, "a storage <slice> needs type='storage', offset and size")
    store = child(src, "dataStore")
    if store is not None:
        if (disk.driver.get("type") or "raw") != "qcow2":
            _fail(ctx, disk, "unsupported configuration: <dataStore> feature available only with qcow2 images")
        fmt = store.find("format")
        if fmt is not None and fmt.get("type", "raw") != "raw":
            _fail(ctx, disk, "unsupported configuration: only 'raw' images supported as <dataStore>")
    # libvirt's parser (virDomainDiskSourceNetworkParse) reads <ssl> for HTTPS/FTPS sources only, <cookies> and
    # query= for HTTP(S), <readahead>/<timeout> for HTTP(S)/FTP(S), <identity> for SSH and NFS, and reads none of
    # them, nor tls=, for a source that is not network: elsewhere they are ignored, not refused, and the argv
    # builder ignores them the same way (network_props). qemuDomainValidateStorageSource's own checks of these
    # options (ssl verification, http cookies, readahead, timeout, query) cannot fire for a parsed domain, nor can
    # virDomainDiskDefValidateSourceChainOne's <snapshot>/<config> one (it refuses them only on a source that is
    # neither network nor RBD, where the parser never reads them); an <initiator> is used by iSCSI only.
    if src.attrs.get("tls") == "yes" and protocol not in ("", "nbd"):  # qemuDomainPrepareStorageSourceTLS
        _fail(ctx, disk, f"unsupported configuration: TLS transport is not supported for disk protocol '{protocol}'")
    identity = child(src, "identity")
    if identity is not None and protocol == "ssh":
        _fail(ctx, disk, "unsupported configuration: an ssh <identity> is used through nbdkit, which the suite "
                         "does not model (qemu.conf storage_use_nbdkit)", unsupported=True)
    if disk.type == "nvme":
        if not ctx.caps.has("drive-nvme"):
            _fail(ctx, disk, "unsupported configuration: NVMe disks are not supported with this QEMU binary",
                  unsupported=True)
        if disk.device != "disk":
            _fail(ctx, disk, "unsupported configuration: NVMe source can be used for disk device only")
    if protocol == "nbd" and src.attrs.get("tls") == "yes" and not ctx.caps.has("nbd-tls"):
        _fail(ctx, disk, "unsupported configuration: this qemu does not support TLS transport for NBD",
              unsupported=True)
    if protocol == "nbd" and src.attrs.get("tlsHostname") and not ctx.caps.has("blockdev.nbd.tls-hostname"):
        _fail(ctx, disk, "unsupported configuration: 'tlsHostname' field is not supported by this QEMU",
              unsupported=True)
    if protocol in ("nbd", "nfs", "iscsi", "ssh", "sheepdog", "vxhs", "tftp", *CURL_PROTOCOLS) and \
            len(src.hosts) > 1:
        _fail(ctx, disk, f"internal error: {protocol} protocol accepts only one host")


def _validate_encryption(ctx: Ctx, disk: Disk, enc: etree._Element, protocol: str) -> None:
    """virStorageEncryptionParseNode, virDomainDiskDefValidateSourceChainOne and qemuDomainValidateStorageSource,
    in libvirt's order."""
    fmt = enc.get("format")
    if not fmt:
        _fail(ctx, disk, "XML error: unknown volume encryption format")
    if fmt == "luks":  # <cipher> and <ivgen> are read for LUKS only (elsewhere ignored)
        if enc.find("ivgen") is not None and enc.find("cipher") is None:
            _fail(ctx, disk, "XML error: ivgen element found, but cipher is missing")
        if enc.find("cipher") is not None:
            _fail(ctx, disk, "unsupported configuration: supplying <cipher> for domain disk definition is "
                             "unnecessary")
    if fmt in ("default", "qcow"):
        _fail(ctx, disk, "unsupported configuration: old qcow/qcow2 encryption is not supported")
    engine = enc.get("engine", "qemu")
    secrets = enc.findall("secret")
    if engine == "librbd":
        if not ctx.caps.has("rbd-encryption"):
            _fail(ctx, disk, "unsupported configuration: librbd encryption is not supported by this QEMU binary",
                  unsupported=True)
        # libvirt refuses it on a source that is neither network nor RBD: any network source passes, and only the
        # RBD node takes the encryption (network_props), as in libvirt
        if disk.type != "network":
            _fail(ctx, disk, "unsupported configuration: librbd encryption is supported only with RBD backed "
                             "disks")
        if len(secrets) > 1 and not ctx.caps.has("rbd-encryption-layering"):
            _fail(ctx, disk, "unsupported configuration: librbd encryption layering is not supported by this "
                             "QEMU binary", unsupported=True)
        if fmt == "luks-any" and not ctx.caps.has("rbd-encryption-luks-any"):
            _fail(ctx, disk, "unsupported configuration: luks-any encryption is not supported by this QEMU "
                             "binary", unsupported=True)
        return
    if fmt != "luks":  # luks2, luks-any
        _fail(ctx, disk, f"unsupported configuration: '{fmt}' is currently not supported by the qemu encryption "
                         "engine")
    if (disk.driver.get("type") or "raw") not in ("raw", "qcow2"):
        _fail(ctx, disk, "unsupported configuration: encryption is supported only with 'raw' and 'qcow2' image "
                         "format")
    if len(secrets) > 1:
        _fail(ctx, disk, "unsupported configuration: qemu encryption engine expects only a single secret")
    # without a <secret> no key is prepared (qemuDomainSecretStorageSourcePrepareEncryption): a raw image's LUKS
    # layer cannot be built (qemuBlockStorageSourceGetFormatLUKSProps), a qcow2 image gets no encrypt option
    if not secrets and (disk.driver.get("type") or "raw") == "raw":
        _fail(ctx, disk, "internal error: missing secret info for 'luks' driver")


# --- the objects a source refers to ----------------------------------------------------------------


def _encrypted(plain: bytes) -> str:
    return base64.b64encode(encrypt_cbc(plain, HARNESS_MASTER_KEY, HARNESS_SECRET_IV)).decode()


def secret_object(ctx: Ctx, alias: str, plain: bytes = HARNESS_SECRET_VALUE) -> None:
    """A secret QEMU decrypts with the master key (qemuBuildSecretInfoProps, AES form)."""
    if not any(MASTER_KEY_ALIAS in a for a in ctx.argv):  # the master key itself (qemuBuildMasterKeyCommandLine)
        ctx.object({"qom-type": "secret", "id": MASTER_KEY_ALIAS, "format": "raw",
                    "file": f"{domain_dir(ctx.domain.name, ctx.modern_libvirt)}/master-key.aes"})
    ctx.object({"qom-type": "secret", "id": alias, "data": _encrypted(plain), "keyid": MASTER_KEY_ALIAS,
                "iv": base64.b64encode(HARNESS_SECRET_IV).decode(), "format": "base64"})


def cookie_string(cookies: etree._Element) -> str:
    """qemuBlockStorageSourceGetCookieString: name=value pairs joined by '; '."""
    return "; ".join(f"{c.get('name')}={(c.text or '').strip()}" for c in cookies if c.tag == "cookie")


def managed_pr_object(ctx: Ctx) -> None:
    """The one managed qemu-pr-helper of the domain (qemuBuildManagedPRCommandLine)."""
    ctx.object({"qom-type": "pr-manager-helper", "id": MANAGED_PR_ALIAS,
                "path": f"{domain_dir(ctx.domain.name, ctx.modern_libvirt)}/{MANAGED_PR_ALIAS}.sock"})


def storage_objects(ctx: Ctx, disk: Disk, n: int | str, top: bool) -> dict[str, Any]:
    """Write the objects the storage and format nodes of source ``n`` (a node index, or "pflash1" for the
    NVRAM) refer to, in libvirt's order (the
    reservation helper, the auth and cookie secrets, the encryption secrets, the TLS credentials); return the
    properties those nodes take from them."""
    src = disk.source
    assert src is not None
    storage, fmt = f"libvirt-{n}-storage", f"libvirt-{n}-format"
    protocol = src.attrs.get("protocol", "") if disk.type == "network" else ""
    refs: dict[str, Any] = {}
    pr = reservations_of(disk)
    if pr is not None:
        if pr.get("managed") == "yes":
            refs["pr-manager"] = MANAGED_PR_ALIAS
        else:
            alias = f"pr-helper-{storage}"  # qemuDomainGetUnmanagedPRAlias
            psrc = pr.find("source")
            ctx.object({"qom-type": "pr-manager-helper", "id": alias, "path": psrc.get("path") if psrc is not None
                        else None})
            refs["pr-manager"] = alias
    auth = auth_of(ctx, disk, top)
    if auth is not None:
        secret = f"{storage}-auth-secret0"  # qemuAliasForSecret(nodestorage, "auth", 0)
        secret_object(ctx, secret)
        refs["auth"] = (auth.get("username"), secret)
    cookies = child(src, "cookies")
    if cookies is not None and protocol in ("http", "https"):
        secret = f"{storage}-httpcookie-secret0"
        secret_object(ctx, secret, cookie_string(cookies).encode())
        refs["cookie-secret"] = secret
    enc = encryption_of(ctx, disk, top)
    if enc is not None and enc.get("engine") == "librbd":
        layers = []
        for i, _ in enumerate(enc.findall("secret")):
            secret = f"{storage}-encryption-secret{i}"
            secret_object(ctx, secret)
            layers.append(secret)
        encrypt: dict[str, Any] | None = None
        for secret in reversed(layers):  # the first secret is the image's own, each next one its parent's
            layer: dict[str, Any] = {"format": enc.get("format", "luks"), "key-secret": secret}
            if encrypt is not None:
                layer["parent"] = encrypt
            encrypt = layer
        refs["rbd-encrypt"] = encrypt
    elif qemu_luks(enc) and enc.find("secret") is not None:
        secret = f"{fmt}-encryption-secret0"
        secret_object(ctx, secret)
        refs["key-secret"] = secret
    if protocol == "nbd" and src.attrs.get("tls") == "yes":
        alias = f"obj{storage}_tls0"  # qemuAliasTLSObjFromSrcAlias
        if NBD_TLS_X509_SECRET:  # nbd_tls_x509_secret_uuid's secret (qemuDomainPrepareStorageSourceTLS)
            secret_object(ctx, f"{alias}-secret0")
        ctx.object({"qom-type": "tls-creds-x509", "id": alias, "dir": NBD_TLS_X509_DIR, "endpoint": "client",
                    "verify-peer": True, "passwordid": f"{alias}-secret0" if NBD_TLS_X509_SECRET else None})
        refs["tls-creds"] = alias
    return refs


# --- the storage node --------------------------------------------------------------------------


def _inet(host: dict[str, str], protocol: str) -> dict[str, Any]:
    return {"host": host.get("name", ""), "port": host.get("port") or DEFAULT_PORTS.get(protocol, "")}


def _socket(host: dict[str, str], protocol: str, *, typed_inet: bool = True) -> dict[str, Any]:
    """qemuBlockStorageSourceBuildJSONSocketAddress."""
    if host.get("transport") == "unix":
        return {"type": "unix", "path": host.get("socket", "")}
    if host.get("transport") == "rdma":
        raise UnsupportedByQemu("transport protocol 'rdma' is not yet supported")
    return {"type": "inet", **_inet(host, protocol)} if typed_inet else _inet(host, protocol)


def _url(src: DiskSource, protocol: str) -> str:
    """qemuBlockStorageSourceGetURI: scheme://host:port/path[?query]."""
    host = src.hosts[0] if src.hosts else {}
    name = src.attrs.get("name", "")
    url = f"{protocol}://{host.get('name', '')}:{host.get('port') or DEFAULT_PORTS[protocol]}/{name.lstrip('/')}"
    if src.attrs.get("query") and protocol in ("http", "https"):  # parsed for HTTP(S) only
        url += f"?{src.attrs['query']}"
    return url


def _id(ctx: Ctx, disk: Disk, value: str | None, kind: str) -> int | None:
    """An NFS <identity user=/group=>: '+N' is a number, anything else a name on the host."""
    if value is None:
        return None
    if value.startswith("+") and value[1:].isdigit():
        return int(value[1:])
    try:
        return pwd.getpwnam(value).pw_uid if kind == "user" else grp.getgrnam(value).gr_gid
    except KeyError:
        _fail(ctx, disk, f"failed to find {kind} record for name '{value}'")
    return None


def network_props(ctx: Ctx, disk: Disk, refs: dict[str, Any]) -> dict[str, Any]:
    """The protocol part of a network source's storage node (qemuBlockStorageSourceGetBackendProps)."""
    src = disk.source
    assert src is not None
    protocol = src.attrs.get("protocol", "")
    host = src.hosts[0] if src.hosts else {}
    name = src.attrs.get("name", "")
    user, secret = refs.get("auth", (None, None))
    props: dict[str, Any] = {"driver": protocol}
    if protocol == "nbd":  # qemuBlockStorageSourceGetNBDProps
        props["server"] = _socket(host, protocol) if host else {"type": "inet", "host": "", "port": "10809"}
        if name:
            props["export"] = name
        props["tls-creds"] = refs.get("tls-creds")
        props["tls-hostname"] = src.attrs.get("tlsHostname") if refs.get("tls-creds") else None
        reconnect = child(src, "reconnect")
        if reconnect is not None and int(reconnect.get("delay") or 0) > 0:
            props["reconnect-delay"] = int(reconnect.get("delay"))
    elif protocol in CURL_PROTOCOLS:  # qemuBlockStorageSourceGetCURLProps
        props["url"] = _url(src, protocol)
        props["username"] = user
        props["password-secret"] = secret
        ssl = child(src, "ssl")
        if ssl is not None and ssl.get("verify") in ("yes", "no") and protocol in ("https", "ftps"):
            props["sslverify"] = ssl.get("verify") == "yes"
        props["cookie-secret"] = refs.get("cookie-secret")
        timeout = child(src, "timeout")
        if timeout is not None and timeout.get("seconds"):
            props["timeout"] = int(timeout.get("seconds"))
        readahead = child(src, "readahead")
        if readahead is not None and readahead.get("size"):
            props["readahead"] = int(readahead.get("size"))
    elif protocol == "iscsi":  # qemuBlockStorageSourceGetISCSIProps
        target, _, lun = name.partition("/")
        hostname = host.get("name", "")
        try:
            v6 = ipaddress.ip_address(hostname).version == 6
        except ValueError:
            v6 = False
        port = host.get("port") or DEFAULT_PORTS["iscsi"]
        props.update({"portal": f"[{hostname}]:{port}" if v6 else f"{hostname}:{port}", "target": target,
                      "lun": int(lun or 0), "transport": "tcp", "user": user, "password-secret": secret})
        iqn = child(child(src, "initiator"), "iqn")
        props["initiator-name"] = iqn.get("name") if iqn is not None else None
    elif protocol == "rbd":  # qemuBlockStorageSourceGetRBDProps
        pool, _, image = name.partition("/")
        snapshot, config = child(src, "snapshot"), child(src, "config")
        props.update({"pool": pool, "image": image,
                      "snapshot": snapshot.get("name") if snapshot is not None else None,
                      "conf": config.get("file") if config is not None else None})
        if src.hosts:
            props["server"] = [_inet(h, protocol) for h in src.hosts]
        props["encrypt"] = refs.get("rbd-encrypt")
        if secret:
            props.update({"user": user, "auth-client-required": ["cephx", "none"], "key-secret": secret})
    elif protocol == "gluster":  # qemuBlockStorageSourceGetGlusterProps
        volume, _, path = name.lstrip("/").partition("/")
        props.update({"volume": volume, "path": path, "server": [_socket(h, protocol) for h in src.hosts],
                      "debug": GLUSTER_DEBUG_LEVEL})
    elif protocol == "nfs":  # qemuBlockStorageSourceGetNFSProps
        identity = child(src, "identity")
        props.update({"server": {"host": host.get("name", ""), "type": "inet"}, "path": name,
                      "user": _id(ctx, disk, identity.get("user") if identity is not None else None, "user"),
                      "group": _id(ctx, disk, identity.get("group") if identity is not None else None, "group")})
    elif protocol == "ssh":  # qemuBlockStorageSourceGetSshProps: QEMU's own driver (qemu.conf's
        # storage_use_nbdkit is off by default); a user name, key or password needs nbdkit: refused (validate)
        props.update({"path": name, "server": _inet(host, protocol)})
    else:  # sheepdog (removed from libvirt), vxhs, tftp: refused by their schema rules first
        raise UnsupportedByQemu(f"network disk protocol {protocol!r} is not supported", path=ctx.domain.source,
                                line=disk.line)
    return {k: v for k, v in props.items() if v is not None}


__all__ = ["auth_of", "data_store", "encryption_of", "managed_pr_object", "network_props", "nvram_source",
           "qemu_luks", "slice_of", "storage_objects", "uses_managed_pr", "validate"]
