"""Turn the argv the static stage built into the argv that boots here, visibly.

The static argv is libvirt's; a live run changes as little as it must, and
every change is listed in ``LiveArgv.changes`` so a result shows it:

- argv[0] becomes the QEMU binary under test, ``-accel`` the accelerator decided for this host;
- a ``pty`` chardev becomes a file in the VM folder (the first serial port is the guest's console),
  a socket chardev passed by fd (libvirt's way) becomes a UNIX socket in the VM folder;
- a PCI hostdev (vfio-pci) that a case declares a substitute for becomes that emulated NIC with the
  same id, bus, address, MAC and failover_pair_id, on its own user-mode netdev; one without a
  substitute makes the run impossible here (NeedsHardware);
- NICs get ``romfile=""``: no option ROM, the guest boots its kernel directly;
- the test guest's ``-kernel``/``-initrd``/``-append``, a console when the domain has no serial port,
  ``-S`` (the runner starts the CPUs once QMP is connected) and ``-no-reboot`` are added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from conformance.argv.options import devices, escape_opt_value, format_props, options, parse_props, split_opts
from conformance.errors import LiveError

NIC_DRIVERS = frozenset({"virtio-net-pci", "e1000", "e1000e", "rtl8139", "vmxnet3", "virtio-net-device",
                         "virtio-net-pci-non-transitional", "igb"})


class NeedsHardware(LiveError):
    """The case needs hardware that is not here and declares no substitute."""


@dataclass
class LiveArgv:
    argv: list[str]
    console_log: Path
    changes: list[str] = field(default_factory=list)
    substitutions: dict[str, str] = field(default_factory=dict)  # hostdev id -> "0000:03:07.1 -> vmxnet3"
    chardev_files: dict[str, Path] = field(default_factory=dict)


def adapt_for_live(argv: list[str], *, binary: str, accel: str, vm_dir: Path, boot_args: list[str],
                   substitutes: dict[str, str] | None = None, macs: dict[str, str] | None = None) -> LiveArgv:
    """The live argv for a static argv (see the module docstring).

    ``substitutes`` maps a host PCI address ("0000:03:07.1") to an emulated NIC model; ``macs``
    maps a host PCI address to the MAC the domain gave that hostdev interface.
    """
    substitutes = substitutes or {}
    macs = macs or {}
    out = [binary]
    changes = [f"emulator {argv[0]} -> {binary}"] if argv[0] != binary else []
    subs: dict[str, str] = {}
    files: dict[str, Path] = {}
    serial_chardevs: list[str] = []
    has_serial = False
    netdev_json = any(opt == "-netdev" and (value or "").startswith("{") for _, opt, value in options(argv))
    for _, opt, value in options(argv):
        if opt == "-accel" and value is not None:
            if value.split(",")[0] != accel:
                changes.append(f"-accel {value} -> {accel}")
            out += ["-accel", accel]
            continue
        if opt == "-chardev" and value is not None:
            out += ["-chardev", _live_chardev(value, vm_dir, files, changes)]
            continue
        if opt == "-vnc" and value is not None:
            out += ["-vnc", _relative_vnc(value, vm_dir)]
            continue
        if opt == "-serial":
            has_serial = True
            if value and value.startswith("chardev:"):
                serial_chardevs.append(value.split(":", 1)[1])
        if opt == "-device" and value is not None:
            props = parse_props(value)
            driver = props.get("driver")
            if driver in ("isa-serial", "pci-serial", "spapr-vty"):
                has_serial = True
                if props.get("chardev"):
                    serial_chardevs.append(str(props["chardev"]))
            if driver == "vfio-pci":
                host = str(props.get("host", ""))
                model = substitutes.get(host)
                if model is None:
                    raise NeedsHardware(f"needs PCI device {host}",
                                        hint="declare live.substitute in templates/cases.toml to run it emulated")
                netdev_id = f"sub-{props.get('id', 'hostdev')}"
                replacement = {"driver": model, "netdev": netdev_id, "id": props.get("id"),
                               "mac": macs.get(host), "romfile": ""}
                replacement.update({k: props[k] for k in ("failover_pair_id", "bus", "addr") if k in props})
                replacement = {k: v for k, v in replacement.items() if v is not None}
                netdev = ({"type": "user", "id": netdev_id} if netdev_json else None)
                out += ["-netdev", json.dumps(netdev, separators=(",", ":")) if netdev else f"user,id={netdev_id}"]
                out += ["-device", format_props(replacement, value)]
                subs[str(props.get("id"))] = f"{host} -> {model}"
                changes.append(f"hostdev {host} (id {props.get('id')}) -> emulated {model} on a user netdev")
                continue
            if driver in NIC_DRIVERS and "romfile" not in props:
                props["romfile"] = ""
                value = format_props(props, value)
        out.append(opt)
        if value is not None:
            out.append(value)
    console = vm_dir / "console.log"
    if serial_chardevs and serial_chardevs[0] in files:
        console = files[serial_chardevs[0]]
    elif not has_serial:
        out += ["-chardev", f"file,id=conformance-console,path={escape_opt_value(console)}",
                "-serial", "chardev:conformance-console"]
        changes.append("added a serial console (file) for the guest's report")
    out += [*boot_args, "-S", "-no-reboot"]
    changes.append("added the test guest (-kernel/-initrd/-append), -S and -no-reboot")
    if any(d.get("romfile") == "" for d in devices(out)):
        changes.append('NICs without option ROM (romfile="")')
    return LiveArgv(out, console, changes, subs, files)


def _live_chardev(value: str, vm_dir: Path, files: dict[str, Path], changes: list[str]) -> str:
    props = parse_props(value)
    backend, chardev_id = props.get("driver"), str(props.get("id", "chardev"))
    if backend == "pty":
        path = vm_dir / f"{chardev_id}.log"
        files[chardev_id] = path
        changes.append(f"chardev {chardev_id}: pty -> file {path.name}")
        return f"file,id={escape_opt_value(chardev_id)},path={escape_opt_value(path)}"
    if backend == "socket" and "fd" in props and "path" not in props and "host" not in props:
        # relative to QEMU's working directory (the VM folder): UNIX socket paths are limited to 107 bytes
        name = f"{chardev_id}.sock"
        rest = {k: v for k, v in props.items() if k not in ("driver", "id", "fd")}
        changes.append(f"chardev {chardev_id}: passed fd -> UNIX socket {name} in the VM folder")
        return format_props({"driver": "socket", "id": chardev_id, "path": name, **rest}, like="socket")
    return value


def _relative_vnc(value: str, vm_dir: Path) -> str:
    """-vnc unix:/SOME/FOLDER/vnc.sock,... -> unix:vnc.sock,...: the socket lives in this VM's folder, where
    QEMU runs (UNIX socket paths are limited to 107 bytes; a migration destination rendered with the
    source's image folder gets a socket of its own). The display is comma syntax: a comma in the path
    is doubled."""
    display, *rest = split_opts(value)
    key = "vnc=" if display.startswith("vnc=") else ""  # libvirt now writes -vnc vnc=unix:PATH,...
    address = display[len(key):]
    if not address.startswith("unix:/"):
        return value
    relative = key + "unix:" + Path(address[len("unix:"):]).name
    return ",".join(escape_opt_value(item) for item in [relative, *rest])
