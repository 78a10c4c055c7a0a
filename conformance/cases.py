"""The case catalogue (templates/cases.toml): what each case renders, needs and expects.

A case is data. ``plan(case, caps)`` says what a case means for one
capability fixture: run it (on which machine type), expect a capability
error, or skip it and why.
"""

from __future__ import annotations

import itertools
import tomllib
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.caps.model import Capabilities
from conformance.errors import CaseError
from conformance.paths import templates_dir
from conformance.stages import CASE_STAGES, required

if TYPE_CHECKING:
    from conformance.domain.user import UserDomain

STAGES = CASE_STAGES  # what a case's `stages` may list (conformance/stages.py)
_CASE_KEYS = {"template", "description", "targets", "stages", "needs", "error_without", "expect_error", "vars",
              "arch_vars", "live", "argv_contains", "smoke", "bisect"}


@dataclass(frozen=True)
class Case:
    name: str
    template: str
    description: str
    targets: tuple[tuple[str, str], ...]  # (arch, machine)
    stages: tuple[str, ...]
    needs: tuple[str, ...] = ()
    error_without: str | None = None
    expect_error: str | None = None
    argv_contains: tuple[str, ...] = ()  # substrings the built argv must contain
    vars: dict[str, Any] = field(default_factory=dict, hash=False)
    arch_vars: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    live: dict[str, Any] = field(default_factory=dict, hash=False)
    source: str = ""
    smoke: bool = False  # one of the live smoke set's cases (conformance/pytest_plugin.py marks its tests smoke)
    bisect: bool = False  # device-rich: a failed boot/migrate re-runs device subsets (conformance/live/bisect.py)
    devices_only: frozenset[str] | None = None  # set by a bisection run: the -device keys the live argv keeps
    # a user's own domain file (run --domain) instead of a template: conformance/domain/user.py
    domain: UserDomain | None = field(default=None, hash=False, compare=False)
    layer: str = ""  # the data layer of its catalogue entry (conformance/data.py): checkout, packaged, a folder

    def machine_for(self, arch: str) -> str | None:
        return next((m for a, m in self.targets if a == arch), None)

    @property
    def arches(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for a, _ in self.targets))

    @property
    def substitutes(self) -> dict[str, str]:
        """PCI host address -> emulated NIC model, for live runs without that hardware."""
        return dict(self.live.get("substitute", {}))


@dataclass(frozen=True)
class Plan:
    """What to do with one case on one fixture."""

    run: bool
    machine: str | None = None
    skip_reason: str = ""
    expect_error: str | None = None  # message the run must fail with


def plan(case: Case, caps: Capabilities) -> Plan:
    machine = case.machine_for(caps.arch)
    if machine is None:
        return Plan(False, skip_reason=f"case is for {', '.join(case.arches)}, not {caps.arch}")
    if caps.machine(machine) is None:
        return Plan(False, skip_reason=f"QEMU {caps.version} {caps.arch} has no machine type {machine}")
    missing = [flag for flag in case.needs if not caps.has(flag)]
    if missing and case.error_without:
        return Plan(True, machine, expect_error=case.error_without)
    if missing:
        return Plan(False, machine, skip_reason=f"capability missing: {', '.join(missing)}")
    lacking = _qemu_args_lacking(case, caps)
    if lacking:  # the case's own <qemu:commandline>, written once for every build, asks what this QEMU lacks
        return Plan(False, machine, skip_reason=f"the case's qemu_args need what this QEMU lacks: {lacking}")
    return Plan(True, machine, expect_error=case.expect_error)


def _qemu_args_lacking(case: Case, caps: Capabilities) -> str:
    """The first problem the QAPI schema check (conformance/argv/qapi_check.py) finds in the -netdev/-blockdev/
    -chardev/-object of the case's qemu_args on this fixture; "" when none (or nothing to check)."""
    args = {**case.vars, **case.arch_vars.get(caps.arch, {})}.get("qemu_args")
    if not isinstance(args, list) or not args:
        return ""
    entries = tuple(str(a) for a in args)

    def first_problem() -> str:
        from conformance.argv.qapi_check import OPTIONS, qapi_problems

        for opt, value in itertools.pairwise(entries):
            if opt in OPTIONS:
                problems = qapi_problems(opt, value, caps)
                if problems:
                    return problems[0]
        return ""

    return caps.derived(("qemu_args lacking", entries), first_problem)


def case_variables(case: Case, caps: Capabilities, machine: str, *, image_dir: str, defaults: dict[str, Any],
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Template variables: runner defaults < catalogue defaults < case vars < arch vars < overrides."""
    variables: dict[str, Any] = {
        "name": case.name,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"qemu-conformance:{case.name}")),
        "arch": caps.arch,
        "machine": machine,
        "emulator": f"/usr/bin/qemu-system-{caps.arch}",
        "domain_type": "qemu",
        "image_dir": image_dir,
        **defaults,
        **case.vars,
        **case.arch_vars.get(caps.arch, {}),
        **(overrides or {}),
    }
    if isinstance(variables.get("qemu_args"), list):  # JSON or comma syntax, as the build takes -device
        from conformance.domain.commandline import qemu_args_for

        variables["qemu_args"] = qemu_args_for(variables["qemu_args"], caps, where=case.source or case.name,
                                               case_name=case.name)
    return variables


@dataclass
class Catalogue:
    path: Path  # the (base layer's) cases.toml
    cases: dict[str, Case]
    defaults: dict[str, Any]
    files: tuple[Path, ...] = ()  # every layer's cases.toml it was read from, lowest first (default: path)

    def __post_init__(self) -> None:
        self.files = self.files or (self.path,)

    def select(self, patterns: list[str] | None = None) -> list[Case]:
        import fnmatch

        if not patterns:
            return list(self.cases.values())
        chosen = [c for c in self.cases.values() if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
        if not chosen:
            raise CaseError(f"no case matches {' '.join(patterns)}", path=self.path,
                            hint=f"known: {', '.join(sorted(self.cases))}")
        return chosen

    def get(self, name: str) -> Case:
        try:
            return self.cases[name]
        except KeyError:
            raise CaseError(f"unknown case {name!r}", path=self.path,
                            hint=f"known: {', '.join(sorted(self.cases))}") from None


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    return None


def _parse_case(name: str, raw: dict[str, Any], path: Path, text: str,
                domains: tuple[Path, ...] | None = None, layer: str = "") -> Case:
    line = _line_of(text, f"[cases.{name}]")

    def fail(message: str, hint: str | None = None) -> CaseError:
        return CaseError(f"case {name}: {message}", path=path, line=line, hint=hint)

    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}", hint=f"known: {', '.join(sorted(_CASE_KEYS))}")
    for key in ("template", "description", "targets", "stages"):
        if key not in raw:
            raise fail(f"missing '{key}'")
    if domains is None and path.parent == templates_dir():
        domains = (templates_dir() / "domains",)
    if domains and not any((d / raw["template"]).exists() for d in domains):
        raise fail(f"template {raw['template']} not found",
                   hint=f"templates live in {' or '.join(str(d) for d in domains)}")
    targets = []
    for target in raw["targets"]:
        arch, sep, machine = str(target).partition(":")
        if not sep or not arch or not machine:
            raise fail(f"target {target!r} is not ARCH:MACHINE", hint='e.g. "x86_64:q35"')
        targets.append((arch, machine))
    bad_stages = [s for s in raw["stages"] if s not in STAGES]
    if bad_stages:
        raise fail(f"unknown stage(s) {', '.join(bad_stages)}", hint=f"stages: {', '.join(STAGES)}")
    for listed in raw["stages"]:
        lacking = [r for r in required(listed) if r not in raw["stages"]]
        if lacking:
            raise fail(f"stage {listed} builds on {', '.join(lacking)}, which the case does not list",
                       hint=f"add {', '.join(repr(r) for r in lacking)} to its stages, or drop {listed!r}")
    for flag in ("smoke", "bisect"):
        if not isinstance(raw.get(flag, False), bool):
            raise fail(f"{flag} = {raw[flag]!r} is not a boolean", hint=f"{flag} = true, or leave it out")
    if {"migrate", "migrate_why"} & set(raw.get("live", {})):
        raise fail("[live] migrate is gone: the case's stages decide whether it migrates",
                   hint="leave 'migrate' out of its stages, and say why in a comment")
    return Case(
        name=name, template=raw["template"], description=raw["description"], targets=tuple(targets),
        stages=tuple(raw["stages"]), needs=tuple(raw.get("needs", ())), error_without=raw.get("error_without"),
        expect_error=raw.get("expect_error"), argv_contains=tuple(raw.get("argv_contains", ())),
        vars=dict(raw.get("vars", {})),
        arch_vars={k: dict(v) for k, v in raw.get("arch_vars", {}).items()}, live=dict(raw.get("live", {})),
        source=f"{path}:{line}" if line else str(path), smoke=raw.get("smoke", False),
        bisect=raw.get("bisect", False), layer=layer,
    )


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The catalogue ``path``, or (default) every data layer's cases.toml merged: a case of an upper layer
    replaces ours of the same name, its template found in its layer's templates/domains/ or below
    (conformance/data.py)."""
    if path is not None:
        return _load_catalogue(str(path))
    from conformance.data import layers

    return _load_layers(tuple((layer.name, layer.catalogue, layer.domains) for layer in layers()))


@lru_cache(maxsize=4)
def _load_layers(found: tuple[tuple[str, Path, Path], ...]) -> Catalogue:
    cases: dict[str, Case] = {}
    defaults: dict[str, Any] = {}
    files: list[Path] = []
    domains: list[Path] = []
    for name, path, folder in found:
        if folder.is_dir():
            domains.insert(0, folder)
        if not path.is_file() and files:
            continue  # a user layer without cases (the base layer must have its catalogue: read it, or say so)
        layer = _load_catalogue(str(path), tuple(domains), name)
        cases.update(layer.cases)
        defaults.update(layer.defaults)
        files.append(path)
    return Catalogue(path=files[0], cases=cases, defaults=defaults, files=tuple(files))


@lru_cache(maxsize=8)
def _load_catalogue(path_text: str, domains: tuple[Path, ...] | None = None, layer: str = "") -> Catalogue:
    path = Path(path_text)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CaseError(f"cannot read the case catalogue: {exc.strerror}", path=path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise CaseError(f"malformed TOML: {exc}", path=path, line=line) from None
    cases = {name: _parse_case(name, raw, path, text, domains, layer) for name, raw in data.get("cases", {}).items()}
    return Catalogue(path=path, cases=cases, defaults=dict(data.get("defaults", {})))
