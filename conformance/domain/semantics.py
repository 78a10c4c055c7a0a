"""Semantic rules the RelaxNG schema cannot express, with libvirt's messages where it has one.

DomainInvalid: the domain contradicts itself (teaming partners, aliases).
UnsupportedByQemu: the domain is fine but these capabilities cannot run it.
"""

from __future__ import annotations

from conformance.caps.model import Capabilities, QemuVersion
from conformance.domain.model import Device, Domain
from conformance.domain.rules import first_refusal
from conformance.errors import DomainInvalid, UnsupportedByQemu

_UNSUPPORTED = "unsupported configuration: "
TEAMING_UNSUPPORTED = "unsupported configuration: virtio-net failover (teaming) is not supported with this QEMU binary"


def _invalid(domain: Domain, message: str, dev: Device | None = None, hint: str | None = None) -> DomainInvalid:
    return DomainInvalid(message, path=domain.source, line=dev.line if dev is not None else None, hint=hint)


def _unsupported(domain: Domain, message: str, dev: Device | None = None, hint: str | None = None) -> UnsupportedByQemu:
    return UnsupportedByQemu(message, path=domain.source, line=dev.line if dev is not None else None, hint=hint)


def validate_domain(domain: Domain, caps: Capabilities | None = None, *, caps_only: bool = False) -> None:
    """Raise DomainInvalid / UnsupportedByQemu for the first rule the domain breaks.

    ``caps_only``: ``validate_domain(domain)`` (no caps) already passed, so only the checks that read caps
    run (the same verdict as running them all, each rule run once)."""
    if not caps_only:
        _aliases(domain)
        _teaming(domain)
    refusal = first_refusal(domain, caps, caps_only=caps_only)
    if refusal is not None:
        raise refusal.error(domain)
    if caps is not None:
        _capabilities(domain, caps)


def _aliases(domain: Domain) -> None:
    """virDomainDefValidateAliases (domain_validate.c): user aliases are unique. An alias that is not a user
    alias never gets here: libvirt drops it while parsing (conformance/domain/parse.py user_alias)."""
    seen: dict[str, Device] = {}
    for dev in domain.all_devices():
        alias = dev.alias
        if alias is None:
            continue
        if alias in seen:
            raise _invalid(domain, f"unsupported configuration: non unique alias detected: {alias}", dev)
        seen[alias] = dev


def _teaming(domain: Domain) -> None:
    """libvirt's teaming checks, with its messages: virDomainNetDefValidate and virDomainHostdevDefValidate
    (domain_validate.c), qemuValidateDomainDeviceDefNetwork (qemu_validate.c), the same in libvirt 9.0 and
    11.3. libvirt does not ask a persistent interface for an alias (QEMU's failover_pair_id then names the
    id libvirt assigns, net0) nor a transient one to name an existing alias (failover_pair_id names it
    anyway): both run, the team just never forms."""
    d = domain.devices
    for net in d.interfaces:
        team = net.teaming
        if team is None:
            continue
        if team.type == "persistent" and (net.model or "") not in ("virtio", "virtio-transitional",
                                                                      "virtio-non-transitional"):
            raise _invalid(domain, f"{_UNSUPPORTED}virtio-net teaming persistent interface must be "
                                   f"<model type='virtio'/>, not '{net.model or ''}'", net)
        if team.type == "transient" and net.type not in ("hostdev", "network"):
            raise _invalid(domain, f"{_UNSUPPORTED}virtio-net teaming transient interface must be type='hostdev', "
                                   f"not '{net.type}'", net)
        if team.type == "transient" and not team.persistent:
            raise _invalid(domain, f"{_UNSUPPORTED}teaming persistent attribute must be set if teaming type is "
                                   "'transient'", net)
        if team.type != "transient" and team.persistent:
            raise _invalid(domain, f"{_UNSUPPORTED}teaming persistent attribute not allowed if teaming type is "
                                   f"'{team.type}'", net)
        if team.type not in ("persistent", "transient"):
            raise _invalid(domain, f"unknown teaming type {team.type!r}", net, hint="use persistent or transient")
    for hostdev in d.hostdevs:
        team = hostdev.teaming
        if team is None:
            continue
        if team.type != "transient":
            raise _invalid(domain, f"{_UNSUPPORTED}teaming hostdev devices must have type='transient'", hostdev)
        if not team.persistent:
            raise _invalid(domain, f"{_UNSUPPORTED}missing required persistent attribute in hostdev teaming "
                                   "element", hostdev)
        if hostdev.mode != "subsystem" or hostdev.type != "pci":
            raise _invalid(domain, f"{_UNSUPPORTED}teaming is only supported for pci hostdev devices", hostdev)


def _capabilities(domain: Domain, caps: Capabilities) -> None:
    d = domain.devices
    teaming = any(n.teaming is not None for n in d.interfaces) or any(h.teaming is not None for h in d.hostdevs)
    if teaming and not caps.has("virtio-net.failover"):
        raise _unsupported(domain, TEAMING_UNSUPPORTED, hint="needs QEMU 4.2+ (virtio-net-pci 'failover')")
    ps2 = domain.features.get("ps2")
    if ps2 is not None and "state" in ps2.attrs and not caps.has("machine-i8042-opt"):
        raise _unsupported(domain, "unsupported configuration: ps2 feature state cannot be controlled with this "
                                   "QEMU binary",
                           hint="needs QEMU 7.0+")
    if d.iommu is not None and d.iommu.model == "virtio":
        # libvirt: virtio-iommu on x86 (q35) needs QEMU 6.2+ (ACPI VIOT)
        arch = domain.os.arch or caps.arch
        if not caps.has("virtio-iommu-pci") and not caps.has_type("virtio-iommu-pci"):
            raise _unsupported(domain, "unsupported configuration: IOMMU model 'virtio' is not supported with "
                                       "this QEMU binary", d.iommu)
        if arch in ("x86_64", "i686") and caps.version < QemuVersion(6, 2):
            raise _unsupported(domain, "unsupported configuration: IOMMU model 'virtio' is not supported with "
                                       "this QEMU binary", d.iommu, hint="x86 needs QEMU 6.2+ for virtio-iommu")
    for net in d.interfaces:
        if net.mtu is not None and net.type not in ("network", "bridge", "ethernet", "vhostuser", "user"):
            raise _unsupported(domain, f"setting MTU on interface type {net.type} is not supported yet", net)
