"""Values libvirt's test harness fixes where a running libvirt would pick them at run time.

The argv builder reproduces libvirt's test suite output (../shared/peer/libvirt-corpus,
index.json ``fixed_env``), so the run-time parts of a command line take the values that
harness gives them. They are all here, so a caller that needs real values knows what to
replace.
"""

from __future__ import annotations

from contextvars import ContextVar

# the harness's ARG_MIGRATE_FROM: a start for an incoming migration or a restore (-incoming URI), not a new start
# (libvirt's VIR_QEMU_PROCESS_START_NEW unset): the memory sizes stay as the source ran them, unaligned
# (qemuProcessPrepareDomain runs qemuDomainAlignMemorySizes for a new start only). The batch protocol's
# "migrate_from" sets it per request; None is a new start.
INCOMING: ContextVar[str | None] = ContextVar("incoming", default=None)

DOMAIN_ID = -1  # domain--1-NAME folders, -1-NAME sockets
HARNESS_GENERATED_UUID = "00010203-0405-4607-8809-0a0b0c0d0e0f"  # what a UUID libvirt generates is in the harness
HARNESS_NOW = 1234567890  # the harness's clock (2009-02-13T23:31:30Z): <clock offset='variable'> counts from it
HARNESS_UTC_OFFSET = -1800  # the harness's local time zone (TZ=VIR00:30, index.json fixed_env): UTC - 30 min
MONITOR_FD = 1729  # pre-opened listening socket of the QMP monitor
TAP_FD_BRIDGE = 102  # tap of <interface type='bridge'|'network'>
TAP_FD_ETHERNET = 3  # tap of <interface type='ethernet'>
VHOST_FD = 44
# files libvirt opens for QEMU and passes in fd sets: the fd the harness gives each kind
CHARDEV_SOURCE_FD = 1750
CHARDEV_LOG_FD = 1751
TPM_FD, TPM_CANCEL_FD = 1730, 1731
VSOCK_FD = 6789
VHOST_SCSI_FD = 3  # the vhost-scsi device's pre-opened fd  # the vhost-vsock device's pre-opened fd
VDPA_FD = 1732  # an opened vhost-vdpa device (the harness's qemuVDPAConnect)
# a <disk type='vhostvdpa'> device: the harness opens it only where a test names it (ARG_VDPA_FD; its one test
# passes /dev/vhost-vdpa-0 as fd 201) and hands the fd to the disk's fd set
VDPA_DISK_FD = 201
SCSI_GENERIC_DEVICE = "/dev/sg0"  # a SCSI host device's /dev/sg node: libvirt reads it from sysfs, the harness fixes it
HARNESS_VSOCK_CID = 42  # the guest CID the harness hands out for <cid auto='yes'/>
# the swtpm socket of <tpm><backend type='emulator'/>: the harness replaces libvirt's
# /run/libvirt/qemu/swtpm/<id>-<name>-swtpm.sock with this path
SWTPM_SOCKET = "/dev/test"
# qemu.conf of the harness: spice_password is set (so no disable-ticketing=on); spice_tls is on in
# the harness of libvirt before 10 and off since (libvirt's own default; a few SPICE tests turn it on)
# block devices the harness reports as host CD-ROM drives (its mock of virFileIsCDROM): a cdrom <disk> backed
# by one gets QEMU's host_cdrom driver, any other block device host_device
HOST_CDROM_PATHS = ("/dev/cdrom",)
# qemu.conf's channel_target_dir: a channel path under CHANNEL_TARGET_DIR/domain-* is one libvirt generated
# (older naming) and generates anew, in bind mode
CHANNEL_TARGET_DIR = "/var/lib/libvirt/qemu/channel/target"
SPICE_PASSWORD_CONFIGURED = True
# the harness's hugetlbfs mounts (page size KiB -> mount point; the first is the default size), the host's
# base page size, and qemu.conf's memory_backing_dir
HUGETLBFS_MOUNTS = {2048: "/dev/hugepages2M", 1048576: "/dev/hugepages1G"}
HUGEPAGE_DEFAULT_KIB = 2048
SYSTEM_PAGE_KIB = 4
MEMORY_BACKING_DIR = "/var/lib/libvirt/qemu/ram"
# the harness's host: 4 NUMA nodes of 4 CPUs each (CPU n on node n // 4); numad's advice for placement='auto'
# is every node
HOST_NUMA_NODES = 4
# the harness's host CPU (tests/testutilshostcpus.h, cpuDefault): an Intel core2duo with these extra
# features; <feature policy='optional'> of a custom CPU is on exactly where this host has the feature
HOST_CPU_MODEL = "core2duo"
HOST_CPU_EXTRA_FEATURES = frozenset({"ds", "acpi", "ss", "ht", "tm", "pbe", "ds_cpl", "vmx", "est", "tm2", "cx16",
                                     "xtpr", "lahf_lm"})
HOST_CPUS_PER_NODE = 4
SPICE_TLS_X509_DIR = "/etc/pki/libvirt-spice"
# the DRM render node the harness reports for OpenGL displays without one, and where D-Bus display sockets go
HARNESS_RENDER_NODE = "/dev/dri/foo"
DBUS_SOCKET_DIR = "/var/run/libvirt/qemu/dbus"
PASST_STATE_DIR = "/var/run/libvirt/qemu/passt"  # qemu.conf's passtStateDir: the passt sockets
# secrets: the harness's mocked random bytes make the domain's master key bytes 0..31 and every secret's IV bytes
# 0..15, and its fake secret driver answers every secret (disk auth, LUKS passphrase) with this value
HARNESS_MASTER_KEY = bytes(range(32))
HARNESS_SECRET_IV = bytes(range(16))
HARNESS_SECRET_VALUE = b"AQCVn5hO6HzFAhAAq0NCv8jtJcIcE+HOBlMQ1A"
MASTER_KEY_ALIAS = "masterKey0"


def spice_tls(modern_libvirt: bool) -> bool:
    return not modern_libvirt


def domain_dir(name: str, modern_libvirt: bool) -> str:
    """The domain's private folder (libvirt's HOME for QEMU): the harness of libvirt 10+ uses the real
    /var/lib/libvirt/qemu, older harnesses /tmp/lib (index.json fixed_env HOME)."""
    return f"{lib_dir(modern_libvirt)}/domain-{DOMAIN_ID}-{name}"


def lib_dir(modern_libvirt: bool) -> str:
    """libvirt's state folder for QEMU (cfg->libDir) in the harness."""
    return "/var/lib/libvirt/qemu" if modern_libvirt else "/tmp/lib"
