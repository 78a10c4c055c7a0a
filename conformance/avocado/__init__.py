"""The suite's cases under avocado (``pip install qemu-conformance[avocado]``).

    avocado run qemu-conformance:teaming-q35

- plugins.py: the resolver (``qemu-conformance:CASE_GLOB`` -> one runnable of kind
  ``qemu-conformance`` per (case, stage, build, peer)), the settings (section
  ``[qemu_conformance]`` of avocado's configuration) and the job result plugin that
  writes our results.jsonl beside avocado's results.json;
- runner.py: the nrunner runner of that kind (``avocado-runner-qemu-conformance``; its ``task-run``
  does not import avocado, see there);
- work.py: one work item through the suite's own stage functions (no avocado import);
- status.py: our verdict -> avocado's status.
"""
