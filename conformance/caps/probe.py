"""Probe a QEMU binary over QMP and return its Capabilities.

The binary runs with ``-machine none`` (no guest, no defaults, no display),
KVM when /dev/kvm can be opened and TCG otherwise, QMP on a private
socketpair. All queries are sent at once (qemu.qmp pipelines them), so the
conversation costs about one round trip per phase. The process is always
stopped, and every failure is a ProbeFailed with one line that says what
happened: missing, not executable, not QEMU, crashed (with the signal), hung.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.caps.flags import PROBED_OBJECT_TYPES, PROBED_TYPES, RULES
from conformance.caps.model import (
    QAPI_OPTIONS,
    Capabilities,
    CpuModel,
    CpuProperty,
    HostCpu,
    MachineType,
    Provenance,
    QemuVersion,
    SevInfo,
)
from conformance.caps.qapi_record import encode, record_from_schema
from conformance.errors import LiveError, ProbeFailed
from conformance.qemu.host import kvm_openable
from conformance.qemu.process import LaunchFailed, QemuProcess
from conformance.qemu.qmp import QmpMonitorGone, QmpSession

PROBE_TIMEOUT = 5.0  # seconds per QMP phase (measured: the whole probe takes ~0.15 s)

# QMP commands of the first phase: name -> arguments
_QUERIES: dict[str, dict[str, Any]] = {
    "query-version": {},
    "query-target": {},
    "query-machines": {},
    "qom-list-types": {"abstract": False},
    "query-commands": {},
    "query-qmp-schema": {},
    "query-migrate-capabilities": {},
    "query-cpu-definitions": {},
    "query-kvm": {},
    "query-sev-capabilities": {},  # fails (recorded, not fatal) on hosts without AMD SEV
    "query-command-line-options": {},
    "query-tpm-types": {},
    "query-tpm-models": {},
}


def _check_binary(binary: Path) -> None:
    try:
        st = binary.stat()
    except FileNotFoundError:
        raise ProbeFailed("no such file", path=binary, hint="give the path of a qemu-system-* binary") from None
    except OSError as exc:
        raise ProbeFailed(f"cannot access it: {exc.strerror}", path=binary) from None
    if not stat.S_ISREG(st.st_mode):
        raise ProbeFailed("not a regular file", path=binary, hint="give the path of a qemu-system-* binary")
    if not os.access(binary, os.X_OK):
        raise ProbeFailed("not executable", path=binary, hint=f"chmod +x {binary}")


def probe_binary(binary: str | Path, *, accel: str | None = None, timeout: float = PROBE_TIMEOUT,
                 transcript: Path | None = None, tcg_host_cpu: bool = False) -> Capabilities:
    """Start ``binary``, ask it everything over QMP, stop it, return its Capabilities.

    ``transcript``: where to keep the QMP conversation (qmp.jsonl lines), for replaying it later
    through ``replies_from_transcript`` and ``capabilities_from_replies`` without a QEMU.
    ``tcg_host_cpu``: when the probe ran under KVM, also ask a second QEMU under TCG what libvirt's TCG
    probe reads for ``<cpu mode='host-model'>`` in a ``type='qemu'`` domain (``probe_tcg_cpu``)."""
    path = Path(binary)
    _check_binary(path)
    accels = [accel] if accel else (["kvm", "tcg"] if kvm_openable() else ["tcg"])
    args = ["-machine", "none", "-nodefaults", "-no-user-config", "-display", "none"]
    for name in accels:  # QEMU takes the first accelerator that initialises
        args += ["-accel", name]
    with tempfile.TemporaryDirectory(prefix="qemu-conformance-probe-") as tmp:
        qemu = QemuProcess(path, args, tmp, name=f"probe {path}", qmp_timeout=timeout)
        try:
            qemu.start()
        except LiveError as exc:
            raise ProbeFailed(exc.message, path=path) from None
        try:
            replies = _converse(qemu.qmp, timeout)
        except LaunchFailed as exc:
            raise ProbeFailed(_why(qemu, f"no QMP greeting: {exc.message}", timeout), path=path) from None
        except QmpMonitorGone as exc:
            message = _why(qemu, f"QMP conversation broke off: {exc.cause}", timeout)  # before stopping it
            raise ProbeFailed(message, path=path) from None
        finally:
            qemu.stop(timeout=2.0)
            if transcript is not None and qemu.transcript_path.exists():
                transcript.write_bytes(qemu.transcript_path.read_bytes())
    kvm = _ok(replies.get("query-kvm"), {})
    used = "kvm" if kvm.get("enabled") else accels[-1]
    caps = capabilities_from_replies(replies, binary=str(path.absolute()), accel=used)
    if tcg_host_cpu and used != "tcg" and caps.host_cpu("tcg") is None:
        host, models = probe_tcg_cpu(path, caps.arch, timeout)
        caps = replace(caps, host_cpus=caps.host_cpus + ((host,) if host is not None else ()),
                       cpu_models=caps.cpu_models + models)
    return caps


def probe_tcg_cpu(binary: Path, arch: str, timeout: float = PROBE_TIMEOUT) -> tuple[HostCpu | None,
                                                                                     tuple[CpuModel, ...]]:
    """libvirt's second probe of a binary, under TCG (virQEMUCapsInitQMPSingle with TCG): the CPU models QEMU
    offers there (query-cpu-definitions) and its host CPU, the expansion of ``max`` (virQEMUCapsProbeQMPHostCPU,
    the queries of ``host_cpu_queries``). A KVM probe cannot answer for TCG: the expansion is the accelerator's."""
    args = ["-machine", "none", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg"]
    with tempfile.TemporaryDirectory(prefix="qemu-conformance-probe-") as tmp:
        qemu = QemuProcess(binary, args, tmp, name=f"probe {binary} (TCG CPU)", qmp_timeout=timeout)
        try:
            qemu.start()
        except LiveError as exc:
            raise ProbeFailed(f"under TCG: {exc.message}", path=binary) from None
        try:
            answers = qemu.qmp.cmd_many([("query-cpu-definitions", {})] + [
                ("query-cpu-model-expansion", q) for q in host_cpu_queries(arch, kvm=False)], timeout)
        except (LaunchFailed, QmpMonitorGone) as exc:
            raise ProbeFailed(_why(qemu, f"under TCG: {exc}", timeout), path=binary) from None
        finally:
            qemu.stop(timeout=2.0)
    models = tuple(
        CpuModel(name=c["name"], typename=c.get("typename"),
                 usable=(not c["unavailable-features"]) if "unavailable-features" in c else None,
                 deprecated=bool(c.get("deprecated")), blockers=tuple(c.get("unavailable-features", ())),
                 accel="tcg")
        for c in _ok(answers[0], []))
    return host_cpu_from_replies(answers[1:], "tcg"), models


class RecordedFailure(Exception):
    """A command that failed in a recorded transcript (its error class and description)."""


def replies_from_transcript(lines: list[str]) -> dict[str, Any]:
    """A probe's QMP transcript (qmp.jsonl) -> the replies ``_converse`` returned, for
    ``capabilities_from_replies``. Pipelined commands are answered in order, so the n-th answer
    belongs to the n-th command."""
    import json

    sent: list[dict[str, Any]] = []
    answers: list[Any] = []
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        if "execute" in entry:
            sent.append(entry["execute"])
        elif "return" in entry:
            answers.append(entry["return"])
        elif "error" in entry and isinstance(entry["error"].get("execute"), str):
            answers.append(RecordedFailure(f"{entry['error'].get('class')}: {entry['error'].get('desc')}"))
    replies: dict[str, Any] = {"properties": {}, "host-cpu": []}
    for command, answer in zip(sent, answers, strict=False):
        name, args = command["execute"], command.get("arguments", {})
        if name in ("device-list-properties", "qom-list-properties"):
            replies["properties"][args["typename"]] = answer
        elif name == "query-cpu-model-expansion":
            replies["host-cpu"].append(answer)
        else:
            replies[name] = answer
    return replies


def _why(qemu: QemuProcess, reason: str, timeout: float) -> str:
    ex = qemu.wait(0.5)
    tail = qemu.stderr_tail(2).strip().replace("\n", " | ")
    tail_text = f": {tail[:300]}" if tail else ""
    if ex.returncode is None:
        return f"did not answer QMP within {timeout:g} s ({reason}); it was killed" + tail_text
    if ex.signal:
        return f"crashed at start: killed by {ex.signal}" + tail_text
    if ex.returncode == 0 and not tail:
        return "is not a QEMU binary: it exited with code 0 without speaking QMP"
    return f"exited with code {ex.returncode} before answering QMP{tail_text}"


def _converse(session: QmpSession, timeout: float) -> dict[str, Any]:
    """Two pipelined rounds: the queries, then the properties of the types this QEMU has and its host CPU.

    A command this QEMU lacks or refuses is recorded as its QmpCommandFailed, not fatal.
    """
    first = session.cmd_many(list(_QUERIES.items()), timeout)
    replies = dict(zip(_QUERIES, first, strict=True))
    types = replies["qom-list-types"]
    names = {t["name"] for t in types} if isinstance(types, list) else set()
    wanted = [t for t in PROBED_TYPES if t in names or t.endswith("-machine")]
    expansions = host_cpu_queries(_ok(replies.get("query-target"), {}).get("arch", ""),
                                  bool(_ok(replies.get("query-kvm"), {}).get("enabled")))
    listings = [("qom-list-properties" if t.endswith(("-machine", "-cpu")) or t in PROBED_OBJECT_TYPES
                 else "device-list-properties", {"typename": t}) for t in wanted]
    second = session.cmd_many(listings + [("query-cpu-model-expansion", args) for args in expansions], timeout)
    replies["properties"] = dict(zip(wanted, second[:len(wanted)], strict=True))
    replies["host-cpu"] = second[len(wanted):]
    return replies


def host_cpu_queries(arch: str, kvm: bool) -> list[dict[str, Any]]:
    """query-cpu-model-expansion arguments for the host CPU, as libvirt asks: ``host`` under KVM, ``max``
    under TCG; a static expansion on x86 (QEMU's canonical feature names), a full one on Arm; the
    second time with ``migratable: false`` to learn which features do not migrate (x86 only)."""
    model = "host" if kvm else "max"
    if arch in ("x86_64", "i386"):
        return [{"type": "static", "model": {"name": model}},
                {"type": "static", "model": {"name": model, "props": {"migratable": False}}}]
    if arch in ("aarch64", "arm"):
        return [{"type": "full", "model": {"name": model}}]
    return []


def host_cpu_from_replies(replies: list[Any], accel: str) -> HostCpu | None:
    """libvirt's <hostCPU>: every property of the expansion; with the non-migratable expansion, enabled
    properties say whether they migrate (those only that expansion enables are added as not migrating)."""
    if not replies or isinstance(replies[0], Exception) or not isinstance(replies[0], dict):
        return None
    model = replies[0].get("model", {})
    extra = replies[1] if len(replies) > 1 and isinstance(replies[1], dict) else None
    others = (extra or {}).get("model", {}).get("props", {})
    props = []
    for name, value in sorted(model.get("props", {}).items()):
        migratable: bool | None = None
        if isinstance(value, bool):
            kind, text = "boolean", "true" if value else "false"
            if extra is not None:
                if value:
                    migratable = True
                elif others.get(name) is True:
                    text, migratable = "true", False
        elif isinstance(value, int | float):
            kind, text = "number", str(int(value))
        elif isinstance(value, str):
            kind, text = "string", value
        else:
            continue
        props.append(CpuProperty(name=name, type=kind, value=text, migratable=migratable))
    return HostCpu(accel=accel, model=model.get("name", ""), migratability=extra is not None,
                   properties=tuple(props))


def _sev(reply: Any) -> SevInfo | None:
    if not isinstance(reply, dict) or "cbitpos" not in reply:
        return None
    return SevInfo(cbitpos=int(reply["cbitpos"]), reduced_phys_bits=int(reply.get("reduced-phys-bits", 0)))


def _default_facts(listings: dict[str, Any]) -> frozenset[str]:
    """The property default values the rules ask about ('default:TYPE.PROP=VALUE', JSON-ish lower case)."""
    wanted = {r.fact for r in RULES if r.kind == "default"}
    have = set()
    for rule_fact in wanted:
        qom_type, _, rest = rule_fact.removeprefix("default:").partition(".")
        prop = rest.partition("=")[0]
        for entry in _ok(listings.get(qom_type), []):
            if entry.get("name") == prop and "default-value" in entry:
                value = entry["default-value"]
                text = str(value).lower() if isinstance(value, bool) else str(value)
                have.add(f"default:{qom_type}.{prop}={text}")
    return frozenset(have & wanted)


def _option_facts(reply: Any) -> frozenset[str]:
    """query-command-line-options -> the 'cmdline:OPTION[/PARAM]' facts the rules ask about."""
    wanted = {r.fact for r in RULES if r.kind == "cmdline"}
    have: set[str] = set()
    for option in _ok(reply, []):
        name = option.get("option", "")
        have.add(f"cmdline:{name}")
        have.update(f"cmdline:{name}/{p.get('name')}" for p in option.get("parameters", []))
    return frozenset(have & wanted)


def _ok(value: Any, default: Any) -> Any:
    """A reply, or ``default`` when the command failed."""
    return default if isinstance(value, Exception) or value is None else value


def capabilities_from_replies(replies: dict[str, Any], *, binary: str, accel: str) -> Capabilities:
    """Raw QMP replies -> Capabilities (pure: unit-testable with recorded replies)."""
    version = replies["query-version"]
    if isinstance(version, Exception) or "qemu" not in version:
        raise ProbeFailed("query-version failed: is this QEMU?", path=binary)
    q = version["qemu"]
    package = version.get("package", "").strip().strip("()").strip()
    target = _ok(replies.get("query-target"), {})
    types = {t["name"] for t in _ok(replies.get("qom-list-types"), [])}
    machines = tuple(
        MachineType(
            name=m["name"], alias=m.get("alias"), is_default=bool(m.get("is-default")),
            deprecated=bool(m.get("deprecated")), acpi=m.get("acpi"), default_ram_id=m.get("default-ram-id"),
            max_cpus=m.get("cpu-max"), default_cpu=m.get("default-cpu-type"),
            hotplug_cpus=bool(m.get("hotpluggable-cpus")), numa_mem=bool(m.get("numa-mem-supported")),
        )
        for m in _ok(replies.get("query-machines"), [])
    )
    schema = _ok(replies.get("query-qmp-schema"), [])
    cpus = tuple(
        CpuModel(name=c["name"], typename=c.get("typename"),
                 usable=(not c["unavailable-features"]) if "unavailable-features" in c else None,
                 deprecated=bool(c.get("deprecated")), blockers=tuple(c.get("unavailable-features", ())),
                 accel=accel)
        for c in _ok(replies.get("query-cpu-definitions"), [])
    )
    host_cpu = host_cpu_from_replies(replies.get("host-cpu", []), accel)
    props: dict[str, dict[str, str]] = {}
    for tname, reply in replies.get("properties", {}).items():
        if isinstance(reply, list):
            if tname.endswith("-cpu"):  # CPU types have hundreds of feature properties: keep the rules' ones
                kept = {r.prop for r in RULES if r.kind == "property" and r.what == tname}
                reply = [p for p in reply if p["name"] in kept]
            props[tname] = {p["name"]: p.get("type", "") for p in reply}
    schema_facts = SchemaIndex(schema).facts(r.what for r in RULES if r.kind == "schema") | \
        _option_facts(replies.get("query-command-line-options")) | \
        frozenset(f"tpm-type:{t}" for t in _ok(replies.get("query-tpm-types"), [])) | \
        frozenset(f"tpm-model:{t}" for t in _ok(replies.get("query-tpm-models"), [])) | \
        _default_facts(replies.get("properties", {}))
    return Capabilities(
        version=QemuVersion(q["major"], q["minor"], q["micro"]),
        arch=target.get("arch", "unknown"),
        package=package,
        accelerators=frozenset(t.removesuffix("-accel") for t in types if t.endswith("-accel")),
        machines=machines,
        qom_types=frozenset(types),
        type_properties=props,
        commands=frozenset(c["name"] for c in _ok(replies.get("query-commands"), [])),
        events=frozenset(e["name"] for e in schema if e.get("meta-type") == "event"),
        schema=schema_facts,
        migration_capabilities=frozenset(
            c["capability"] for c in _ok(replies.get("query-migrate-capabilities"), [])),
        cpu_models=cpus,
        host_cpus=(host_cpu,) if host_cpu is not None else (),
        sev=_sev(replies.get("query-sev-capabilities")),
        option_members=SchemaIndex(schema).option_members(),
        qapi_schema=encode(record_from_schema(schema)),
        provenance=Provenance(
            source="probe", binary=binary, package=package or None, accel=accel, host=socket.gethostname(),
            created=datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            tool=f"qemu-conformance {__version__}",
        ),
    )


class SchemaIndex:
    """Answers libvirt-style queries against a query-qmp-schema reply.

    Query syntax (libvirt's virQEMUQAPISchemaPathGet, as its virQEMUCapsQMPSchemaQueries use it):
    ``ENTITY`` (a command or event exists), then steps: ``arg-type`` /
    ``ret-type`` (follow to that type), ``$FEATURE`` (the current entity has
    the feature), ``^VALUE`` (the current enum type has the value), ``+VARIANT``
    (the union's variant of that discriminator value), ``*MEMBER`` (an optional
    member), any other word (follow the object member of that name to its type);
    arrays are looked through to their element type.
    """

    def __init__(self, schema: list[dict[str, Any]]) -> None:
        self.by_name = {e["name"]: e for e in schema}

    def holds(self, query: str) -> bool:
        parts = query.split("/")
        node = self.by_name.get(parts[0])
        if node is None:
            return False
        for step in parts[1:]:
            if step.startswith("$"):
                if step[1:] not in node.get("features", []):
                    return False
                continue
            if step.startswith("^"):
                values = node.get("values") or [m["name"] for m in node.get("members", [])]
                if node.get("meta-type") != "enum" or step[1:] not in values:
                    return False
                continue
            if node.get("meta-type") == "array":
                node = self.by_name.get(node.get("element-type", ""), {})
            if step in ("arg-type", "ret-type"):
                node = self.by_name.get(node.get(step, ""))
            elif step.startswith("+"):
                variant = next((v for v in node.get("variants", []) if v.get("case") == step[1:]), None)
                node = self.by_name.get(variant["type"]) if variant else None
            else:
                name = step.lstrip("*")
                member = next((m for m in node.get("members", []) if m.get("name") == name), None)
                node = self.by_name.get(member["type"]) if member else None
            if node is None:
                return False
        return True

    def facts(self, queries: Any) -> frozenset[str]:
        return frozenset(q for q in queries if self.holds(q))

    def json_type(self, name: str) -> str:
        """A schema type as the JSON it takes: "string", "int", "boolean", "object", "array", ...; an
        alternate as its choices, "object|string"."""
        node = self.by_name.get(name, {})
        match node.get("meta-type"):
            case "builtin":
                return str(node.get("json-type", ""))
            case "enum":
                return "string"
            case "alternate":
                return "|".join(sorted({self.json_type(m["type"]) for m in node.get("members", [])}))
        return str(node.get("meta-type", ""))

    def object_members(self, name: str, prefix: str = "", depth: int = 0, *, variants: bool = True) -> dict[str, str]:
        """Every member of an object type (and of all its variants), nested objects followed two levels down
        as "outer.inner" ("addr.data.path"); alternates and arrays are not followed."""
        node = self.by_name.get(name, {})
        members = list(node.get("members", []))
        for variant in node.get("variants", []) if variants else ():
            members += self.by_name.get(variant["type"], {}).get("members", [])
        found: dict[str, str] = {}
        for member in members:
            kind = self.json_type(member["type"])
            found[prefix + member["name"]] = kind
            if kind == "object" and depth < 2:
                found |= self.object_members(member["type"], f"{prefix}{member['name']}.", depth + 1)
        return found

    def option_members(self) -> dict[str, dict[str, dict[str, str]]]:
        """The members of the QAPI unions behind -netdev, -blockdev and -chardev (model.QAPI_OPTIONS):
        option -> branch -> member -> JSON type; the members every branch has are kept once, under ""."""
        record: dict[str, dict[str, dict[str, str]]] = {}
        for option, (command, argument) in QAPI_OPTIONS.items():
            union = self.by_name.get(command, {}).get("arg-type", "")
            if argument:
                member = next((m for m in self.by_name.get(union, {}).get("members", []) if m["name"] == argument),
                              None)
                union = member["type"] if member else ""
            node = self.by_name.get(union, {})
            if not node.get("variants"):
                continue  # not a union in this QEMU (netdev_add before 5.0 took any arguments)
            branches: dict[str, dict[str, str]] = {}
            for variant in node["variants"]:
                inner = self.by_name.get(variant["type"], {}).get("members", [])
                if argument and [m["name"] for m in inner] == ["data"]:  # chardev: {"data": ChardevFile}
                    branches[variant["case"]] = self.object_members(inner[0]["type"])
                else:
                    branches[variant["case"]] = self.object_members(variant["type"])
            # the union's own members (netdev: id, type; blockdev: driver, node-name, cache, ...); chardev-add's
            # lie outside the "data" the branches describe
            base = {} if argument else self.object_members(union, variants=False)
            shared = set.intersection(*(set(b.items()) for b in branches.values())) if len(branches) > 1 else set()
            base |= dict(shared)
            record[option] = {"": base} | {name: {k: v for k, v in members.items() if (k, v) not in shared}
                                           for name, members in branches.items()}
        return record
