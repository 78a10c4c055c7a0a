"""argv stage: Domain + Capabilities -> the QEMU command line libvirt would build.

One module per device family (machine, pci, ccw, disk, net, chardev, video, input,
graphics, audio, hostdev, controllers, misc); builder.py fixes the order. host-model
CPUs: cpu_host (libvirt's steps), cpu_x86 (its x86 decoding rules), cpu_map (libvirt's
CPU map, read at run time); firmware: pflash and descriptor-based auto-selection;
harness: the values libvirt's test harness fixes (fds, sockets, ports, folders).
"""

from conformance.argv.builder import build_argv

__all__ = ["build_argv"]
