"""argv stage: Domain + Capabilities -> the QEMU command line libvirt would build.

One module per device family (machine, pci, disk, net, chardev, video, input,
graphics, audio, hostdev, controllers, misc); builder.py fixes the order.
"""

from conformance.argv.builder import build_argv

__all__ = ["build_argv"]
