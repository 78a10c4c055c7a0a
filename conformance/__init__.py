"""qemu-conformance: capability-aware compatibility and conformance suite for QEMU.

Data flows parse -> argv -> live boot -> migrate; see README.md and the
sub-packages: caps (capabilities), domain (templates and domain XML), argv
(command lines), live (real QEMU processes and guests), results, report.
"""

__version__ = "0.1.0"
