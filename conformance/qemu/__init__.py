"""The lowest layer: running QEMU.

- ``process``: QemuProcess, the one owner of a QEMU process (private folder, PDEATHSIG,
  socketpair QMP, ordered stop), and how it ended (Exit, LaunchFailed);
- ``qmp``: QmpSession, one QMP conversation (typed errors that keep their payload, an event
  queue per waiter, pipelined queries, a transcript);
- ``host``: facts about the host (is /dev/kvm openable, which boot is this).

Everything that starts QEMU uses it: the capability probe, the extra-build check and the
live stages (boot, migrate). It imports nothing else of the suite but its errors.
"""
