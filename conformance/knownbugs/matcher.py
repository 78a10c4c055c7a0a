"""One rule for "this known bug applies here", for every path that asks.

A stage result is described by its :class:`Facts` (QEMU version, stage, arch, accelerator, migration
side and peer, the argv QEMU ran, the features available, the failure's signal and text). The rule
checks a bug's conditions against them in one order, and says which held and which failed:

1. ``version``  the QEMU version is in the bug's ``affected`` range;
2. ``stage``    the stage is one the bug explains (``stages``), or reproduces (``reproduce``);
3. ``arch``, ``accel``  the guest arch and the accelerator are the bug's (``arches``, ``accels``);
4. ``side``, ``peer``   a migration bug's side, the other side's version (``peer``), and
   ``cross_version``: two different QEMU versions;
5. ``machine``  the -machine type of the argv matches ``concerns.machine``;
6. ``concerns`` the argv has the devices ``concerns.devices`` names (``concerns.json``: given as JSON);
7. ``needs``    the hardware or features a reproduction needs are available here (none of them is
   today: a VF is always replaced by an emulated NIC, so vfio bugs never apply to a live result);
8. ``package``  the build's distribution package version (``Facts.package``, from dpkg) is not one the bug
   is fixed in (``fixed_in_packages``: a distribution's backport; ``>=VERSION`` covers later ones too);
9. ``symptom``  the failure shows the bug's signal and text (explaining a failure only).

Three purposes use it:

- ``explain``: a failure that every condition explains is a *known bug*; when several bugs do, the
  result names them all (the most specific first), never the first in the file alone;
- ``expect``: a bug whose conditions 1-8 hold for a plain run of a stage it ``reproduce``\\ s, when that
  run passes, is *not reproduced* (fixed or backported?);
- ``concern``: the static stages flag "this domain on this version meets that bug" from the argv alone
  (version, arch, machine, concerns: run-time facts such as the accelerator are not known there).

A fact the bug restricts but the result does not record (no argv, no accelerator) fails its condition:
a bug never explains a result on facts nobody checked.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from conformance.argv.options import options, parse_props
from conformance.caps.model import QemuVersion
from conformance.data import BASE_NAMES, bugs_files, layer_of, package_file
from conformance.errors import CaseError

S = TypeVar("S")  # one side of a pair, as a caller describes it
T = TypeVar("T")  # what explains a hazard, as a caller records it

BUGS_FILE = package_file("knownbugs", "bugs.toml")  # ours; data layers add theirs (conformance/data.py)

#: What a reproduction may need that this suite offers on this host: nothing yet (a VF is always
#: replaced by an emulated NIC), so a bug that needs a real VF never explains, nor is expected in, a result.
AVAILABLE_FEATURES: frozenset[str] = frozenset()

Purpose = Literal["explain", "expect", "concern"]
JSON_KEY = "@json"  # a -device's pseudo-property: "on" when it was given as JSON


@dataclass(frozen=True)
class KnownBug:
    id: str
    title: str
    first: QemuVersion
    last: QemuVersion
    fixed: str
    stages: tuple[str, ...]
    signals: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    needs: tuple[str, ...]
    side: str = ""  # migrate: "source" or "destination" when the bug shows on one side only
    peer: tuple[QemuVersion, QemuVersion] | None = None  # migrate: the other side's versions it needs
    concerns: Concerns | None = None  # the configurations it concerns; None: any
    reproduce: tuple[str, ...] = ()  # stages whose plain run (with ``concerns`` and ``needs``) shows it
    arches: tuple[str, ...] = ()  # only on these guest arches (empty: any)
    cross_version: bool = False  # migrate: only between two different QEMU versions
    accels: tuple[str, ...] = ()  # only under these accelerators (empty: any)
    fixed_in_packages: tuple[str, ...] = ()  # distribution package versions with the fix ("1:7.2+dfsg-7+deb12u5",
    #                                          ">=1:7.2+dfsg-7+deb12u5": that one and later)
    layer: str = ""  # the data layer it came from (conformance/data.py)

    def record(self) -> dict[str, str]:
        """The bug as a result records it: enough for reports and JUnit to name it without the database."""
        record = {"id": self.id, "title": self.title, "fixed": self.fixed, "affected": f"{self.first}..{self.last}",
                  "concerns": self.concerns.says if self.concerns else ""}
        if self.layer and self.layer not in BASE_NAMES:
            record["layer"] = self.layer
        return record

    def fixed_in(self, package: str) -> str:
        """The ``fixed_in_packages`` entry that covers distribution package version ``package`` ('' for none)."""
        return next((entry for entry in self.fixed_in_packages if package and package_covered(entry, package)), "")


_TRUE = {"on", "true", "yes", "1"}


def _norm(value: object) -> str:
    text = str(value).lower()
    return "on" if text in _TRUE else "off" if text in {"off", "false", "no", "0"} else text


#: One -device pattern: (property, accepted values) pairs; no values: the property only has to be present.
DevicePattern = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Concerns:
    """Which configurations a bug concerns, read from the built argv (never from case names):
    every pattern in ``devices`` must match some -device (a property given as "*" only has to be
    present, a list accepts any of its values), ``json``: that -device was given as JSON, and
    ``machine`` (a regex) must match the -machine type when given."""

    devices: tuple[DevicePattern, ...] = ()
    machine: re.Pattern[str] | None = None
    says: str = ""  # the configuration in words, for reports
    json: bool = False

    @classmethod
    def from_toml(cls, raw: dict[str, Any]) -> Concerns:
        unknown = set(raw) - {"devices", "machine", "says", "json"}
        if unknown:
            raise ValueError(f"concerns: unknown key(s) {', '.join(sorted(unknown))} (devices, machine, json, says)")
        json_ = bool(raw.get("json", False))
        pats = tuple(tuple(sorted([(str(k), _values(v)) for k, v in d.items()]
                                  + ([(JSON_KEY, ("on",))] if json_ else [])))
                     for d in raw.get("devices", ()))
        if not pats and "machine" not in raw:
            raise ValueError("concerns: give devices and/or machine")
        if json_ and not pats:
            raise ValueError("concerns: json = true needs devices")
        return cls(pats, re.compile(raw["machine"]) if "machine" in raw else None, str(raw.get("says", "")), json_)

    def may_match(self, joined: str) -> bool:
        """False when the argv (joined by newlines) lacks a property name or every driver a pattern needs:
        a cheap test before parsing the -device options."""
        for alternatives in self._words:
            for word in alternatives:
                if word in joined:
                    break
            else:
                return False
        return True

    @cached_property
    def _words(self) -> tuple[tuple[str, ...], ...]:
        """What may_match looks for: per property of each pattern, the words of which one must be in the argv
        (the driver's accepted names, or the property name; nothing for JSON_KEY)."""
        return tuple(v if k == "driver" and v else (k,) for pattern in self.devices for k, v in pattern
                     if k != JSON_KEY)

    @cached_property
    def anchors(self) -> tuple[frozenset[str | tuple[str, str]], ...]:
        """Per property of each pattern, what an argv's -devices all together must have for the pattern to
        match one of them: one of the accepted (name, value) pairs, or the name (see _device_tokens)."""
        return tuple(anchor for pattern in self._pattern_anchors for anchor in pattern)

    @cached_property
    def _pattern_anchors(self) -> tuple[tuple[frozenset[str | tuple[str, str]], ...], ...]:
        """The anchors (see ``anchors``) of each pattern apart."""
        return tuple(tuple(frozenset((k, w) for w in want) if want else frozenset((k,)) for k, want in pattern)
                     for pattern in self.devices)

    def devices_meet(self, devs: list[frozenset[str | tuple[str, str]]]) -> bool:
        """devices_match on each -device's tokens (_device_tokens: its names and (name, value) pairs that some
        anchor names) instead of its dict: a pattern matches a -device exactly when each of its anchors meets that
        -device's tokens (a device's dict has one value per name)."""
        return all(any(not any(map(tokens.isdisjoint, anchors)) for tokens in devs)
                   for anchors in self._pattern_anchors)

    def devices_match(self, devs: list[dict[str, str]]) -> bool:
        """``devs``: the -device dicts, values normalised (_norm), JSON ones with JSON_KEY on."""
        return all(any(all(k in d and (not want or d[k] in want) for k, want in pattern) for d in devs)
                   for pattern in self.devices)

    def describe(self) -> str:
        """The device patterns in short: 'vfio-pci with failover_pair_id' ..."""
        out = []
        for pattern in self.devices:
            driver = next((v for k, v in pattern if k == "driver"), ())
            props = [k if not v else f"{k}={'|'.join(v)}" for k, v in pattern if k not in ("driver", JSON_KEY)]
            what = "|".join(driver) if driver else "a -device"
            out.append(what + (f" with {', '.join(props)}" if props else "")
                       + (" (JSON)" if any(k == JSON_KEY for k, _ in pattern) else ""))
        return "; ".join(out)


def _values(value: object) -> tuple[str, ...]:
    if value == "*":
        return ()
    if isinstance(value, list):
        if not value or "*" in value:
            raise ValueError("concerns: a list of values names the accepted values (not '*', not empty)")
        return tuple(_norm(v) for v in value)
    return (_norm(value),)


# --------------------------------------------------------------------------------- the facts and the rule

@lru_cache(maxsize=8192)
def _device_props(value: str) -> tuple[tuple[str, str], ...]:
    """One -device value's properties, values normalised, JSON_KEY 'on' when given as JSON: a function of the
    string alone, kept (the static matrix meets the same -device strings on many fixtures)."""
    props = {k: _norm(v) for k, v in parse_props(value).items()}
    props[JSON_KEY] = "on" if value.startswith("{") else "off"
    return tuple(props.items())


class FlagMemo:
    """What bugs_concerning keeps across the argvs of one static run (conformance/static.py): the database as
    read at the first call, each -device value's tokens (a function of the string), and the rule's verdict per
    bug and per the facts it reads besides the devices (whose test the candidate passed just before)."""

    def __init__(self) -> None:
        self.bugs: tuple[KnownBug, ...] = ()
        self.anchored: frozenset[str | tuple[str, str]] = frozenset()  # every token some bug's anchors name
        self.tokens: dict[str, frozenset[str | tuple[str, str]]] = {}  # a -device value -> its anchored tokens
        # (id(bug), version, arch, machine, package) -> (bug, whether check holds)
        self.holds: dict[tuple[int, QemuVersion, str, str, str], tuple[KnownBug, bool]] = {}
        # (id(flaggable bugs), the argv's anchored tokens) -> (those bugs, the ones whose every anchor meets them)
        self.anchored_bugs: dict[tuple[int, frozenset[str | tuple[str, str]]],
                                 tuple[tuple[KnownBug, ...], list[KnownBug]]] = {}


def _device_tokens(argv: list[str], memo: FlagMemo) -> list[frozenset[str | tuple[str, str]]]:
    """Per -device of the argv, in the order of Facts.devices, its property names and (name, value) pairs as
    Facts.devices gives them (JSON_KEY included), those some bug's anchors name (``memo.anchored``). All together,
    a pattern of Concerns.devices matches one -device only if each of its Concerns.anchors meets them (the converse
    does not hold: a cheap test before the argv is joined); one by one, Concerns.devices_meet. Each -device
    value's are kept in ``memo`` (the static stages meet the same -device strings on many fixtures)."""
    found: list[frozenset[str | tuple[str, str]]] = []
    # options() pairs every "-device" with the next word unless that starts with "-" (so "-device" is never a value)
    for value in [argv[i + 1] for i in range(1, len(argv) - 1) if argv[i] == "-device"]:
        if not value or value[0] == "-":
            continue
        tokens = memo.tokens.get(value)
        if tokens is None:
            props = _device_props(value)
            tokens = memo.tokens[value] = memo.anchored.intersection([*props, *(k for k, _ in props)])
        found.append(tokens)
    return found


def argv_machine(argv: list[str] | tuple[str, ...]) -> str:
    """The -machine type of an argv ('' without one): the value of its first -machine that has one, as
    options() pairs them ("-machine" is never a value: values do not start with "-")."""
    i = 0
    while True:
        try:
            i = argv.index("-machine", i + 1)
        except ValueError:
            return ""
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if value and not value.startswith("-"):
            break
    if value.startswith("{"):
        return str(parse_props(value).get("type", ""))
    return value.split(",")[0].removeprefix("type=")


@dataclass(frozen=True)
class Facts:
    """What a stage result says about itself, as the rule reads it. An empty string or None: not known."""

    version: QemuVersion
    stage: str
    arch: str = ""
    accel: str = ""
    side: str = ""  # migrate: which side this version ran on
    peer: QemuVersion | None = None  # migrate: the other side's version
    argv: tuple[str, ...] | None = None  # the argv QEMU ran (or would have run)
    available: frozenset[str] = AVAILABLE_FEATURES
    signal: str | None = None  # the signal the QEMU process died of
    text: str = ""  # the reason, stderr tail, console tail
    package: str = ""  # the build's distribution package version (dpkg's, e.g. "1:7.2+dfsg-7+deb12u18")

    @cached_property
    def joined(self) -> str:
        return "\n".join(self.argv or ())

    @cached_property
    def machine(self) -> str:
        """The -machine type of the argv ('' without one)."""
        return argv_machine(self.argv or ())

    @cached_property
    def devices(self) -> list[dict[str, str]]:
        """The -device dicts of the argv, values normalised, JSON_KEY 'on' for those given as JSON."""
        return [dict(_device_props(value)) for _, opt, value in options(list(self.argv or ()))
                if opt == "-device" and value]


@dataclass(frozen=True)
class Condition:
    name: str  # version, stage, arch, accel, side, peer, machine, concerns, needs, package, symptom
    held: bool
    says: str  # what was compared, in words


@dataclass(frozen=True)
class Applicability:
    """One bug against one result's facts: every condition checked, in the rule's order."""

    bug: KnownBug
    purpose: Purpose
    conditions: tuple[Condition, ...]

    @property
    def holds(self) -> bool:
        return all(c.held for c in self.conditions)

    @property
    def failed(self) -> list[Condition]:
        return [c for c in self.conditions if not c.held]

    @property
    def specificity(self) -> int:
        """How many conditions narrowed the bug beyond its version and stage (more: more specific)."""
        return sum(1 for c in self.conditions if c.held and c.name not in ("version", "stage")
                   and not c.says.startswith("any "))

    def why(self) -> str:
        """'held: ...; failed: ...' in words."""
        held = [c.says for c in self.conditions if c.held and not c.says.startswith("any ")]
        failed = [c.says for c in self.failed]
        return "; ".join(part for part in (
            f"failed: {', '.join(failed)}" if failed else "", f"held: {', '.join(held)}" if held else "") if part)

    def to_dict(self) -> dict[str, Any]:
        return {"bug": self.bug.id, "holds": self.holds,
                "conditions": [{"name": c.name, "held": c.held, "says": c.says} for c in self.conditions]}


def check(bug: KnownBug, facts: Facts, purpose: Purpose = "explain", *, full: bool = True) -> Applicability:
    """The rule: ``bug``'s conditions against ``facts`` for ``purpose``; ``full=False`` stops at the first
    condition that fails (the static stages only want the bugs that apply)."""
    conditions: list[Condition] = []
    for step in _STEPS:
        cond = step(bug, facts, purpose)
        if cond is None:
            continue
        conditions.append(cond)
        if not full and not cond.held:
            break
    return Applicability(bug, purpose, tuple(conditions))


def _version(bug: KnownBug, f: Facts, _: Purpose) -> Condition:
    ok = bug.first <= f.version <= bug.last
    return Condition("version", ok, f"QEMU {f.version} {'in' if ok else 'not in'} {bug.first}..{bug.last}")


def _stage(bug: KnownBug, f: Facts, purpose: Purpose) -> Condition | None:
    if purpose == "concern":
        return None
    stages = bug.reproduce if purpose == "expect" else bug.stages
    if f.stage in stages:
        return Condition("stage", True, f"stage {f.stage} {'reproduces' if purpose == 'expect' else 'can show'} it")
    key = "reproduce" if purpose == "expect" else "stages"
    return Condition("stage", False, f"stage {f.stage} not in {', '.join(stages) or 'no stage'} ({key})")


def _among(name: str, wanted: tuple[str, ...], have: str, what: str) -> Condition:
    if not wanted:
        return Condition(name, True, f"any {what}")
    if not have:
        return Condition(name, False, f"{what} not known (the bug needs {', '.join(wanted)})")
    ok = have in wanted
    return Condition(name, ok, f"{what} {have}" + ("" if ok else f" not {', '.join(wanted)}"))


def _arch(bug: KnownBug, f: Facts, _: Purpose) -> Condition:
    return _among("arch", bug.arches, f.arch, "arch")


def _accel(bug: KnownBug, f: Facts, purpose: Purpose) -> Condition | None:
    if purpose == "concern":
        return None  # an argv alone does not say which accelerator a run will use
    return _among("accel", bug.accels, f.accel, "accelerator")


def _side(bug: KnownBug, f: Facts, purpose: Purpose) -> Condition | None:
    if purpose == "concern":
        return None
    return _among("side", (bug.side,) if bug.side else (), f.side, "side")


def _peer(bug: KnownBug, f: Facts, purpose: Purpose) -> Condition | None:
    if purpose == "concern":
        return None
    if bug.peer is None and not bug.cross_version:
        return Condition("peer", True, "any peer")
    if f.peer is None:
        return Condition("peer", False, "no peer version (the bug needs a migration between two builds)")
    parts, ok = [], True
    if bug.cross_version:
        same = f.peer == f.version
        ok &= not same
        parts.append(f"peer {f.peer} {'is the same version' if same else 'is another version'}")
    if bug.peer is not None:
        inside = bug.peer[0] <= f.peer <= bug.peer[1]
        ok &= inside
        parts.append(f"peer {f.peer} {'in' if inside else 'not in'} {bug.peer[0]}..{bug.peer[1]}")
    return Condition("peer", ok, ", ".join(dict.fromkeys(parts)))


def _machine(bug: KnownBug, f: Facts, _: Purpose) -> Condition:
    pattern = bug.concerns.machine if bug.concerns else None
    if pattern is None:
        return Condition("machine", True, "any machine type")
    if f.argv is None:
        return Condition("machine", False, f"machine type not known (no argv; the bug needs /{pattern.pattern}/)")
    ok = bool(f.machine and pattern.search(f.machine))
    return Condition("machine", ok, f"machine {f.machine or '(none)'} {'matches' if ok else 'does not match'} "
                                    f"/{pattern.pattern}/")


def _concerns(bug: KnownBug, f: Facts, _: Purpose) -> Condition:
    if bug.concerns is None or not bug.concerns.devices:
        return Condition("concerns", True, "any configuration")
    what = bug.concerns.describe()
    if f.argv is None:
        return Condition("concerns", False, f"argv not known (the bug concerns {what})")
    ok = bug.concerns.may_match(f.joined) and bug.concerns.devices_match(f.devices)
    return Condition("concerns", ok, f"the argv {'has' if ok else 'lacks'} {what}")


def _needs(bug: KnownBug, f: Facts, purpose: Purpose) -> Condition | None:
    if purpose == "concern":
        return None  # the static flag is about the configuration, whatever the host has
    if not bug.needs:
        return Condition("needs", True, "any host")
    missing = sorted(set(bug.needs) - set(f.available))
    return Condition("needs", not missing, f"needs {', '.join(bug.needs)}"
                     + (f": {', '.join(missing)} not available here" if missing else " (available)"))


def _package(bug: KnownBug, f: Facts, _: Purpose) -> Condition | None:
    if not bug.fixed_in_packages:
        return None
    if not f.package:
        return Condition("package", True, "package version not known (fixed_in_packages not checked)")
    entry = bug.fixed_in(f.package)
    if entry:
        return Condition("package", False, f"package {f.package} has the fix (fixed_in_packages {entry})")
    return Condition("package", True, f"package {f.package} not in fixed_in_packages")


def _symptom(bug: KnownBug, f: Facts, purpose: Purpose) -> Condition | None:
    if purpose != "explain":
        return None
    parts, ok = [], True
    if bug.signals:
        hit = f.signal in bug.signals
        ok &= hit
        parts.append(f"signal {f.signal or '(none)'}" + ("" if hit else f" not {', '.join(bug.signals)}"))
    if bug.patterns:
        found = next((p for p in bug.patterns if p.search(f.text)), None)
        ok &= found is not None
        parts.append(f"text matches /{found.pattern}/" if found is not None
                     else f"text matches none of {', '.join('/' + p.pattern + '/' for p in bug.patterns)}")
    return Condition("symptom", ok, ", ".join(parts) or "any failure")


_STEPS = (_version, _stage, _arch, _accel, _side, _peer, _machine, _concerns, _needs, _package, _symptom)


def match(facts: Facts, purpose: Purpose = "explain", bugs: Iterable[KnownBug] | None = None) -> list[Applicability]:
    """Every bug (default: the database) checked against ``facts``, in file order."""
    return [check(b, facts, purpose) for b in (load_bugs() if bugs is None else bugs)]


def ranked(found: Iterable[Applicability]) -> list[Applicability]:
    """The ones that hold, most specific first (then the narrower version range, then file order)."""
    holding = [a for a in found if a.holds]
    order = {id(a): i for i, a in enumerate(holding)}
    return sorted(holding, key=lambda a: (-a.specificity, _span(a.bug), order[id(a)]))


def each_hazard(hazards: Mapping[str, str], sides: Sequence[S],
                attempt: Callable[[str, str, S], T | None]) -> tuple[dict[str, T], list[str]]:
    """The per-hazard rule of a prediction that names several devices (the ``vmstate`` stage and ``bugs
    explain`` both follow it): each device's hazard is matched on its own, the sides in order (the source's
    first), the first side's match kept. Returns {device: match} and the devices no side explains; a caller
    says known-bug only when none is left, so that a bug of one device never hides another device's break."""
    explained: dict[str, T] = {}
    left: list[str] = []
    for device, hazard in hazards.items():
        for side in sides:
            found = attempt(device, hazard, side)
            if found is not None:
                explained[device] = found
                break
        else:
            left.append(device)
    return explained, left


def _span(bug: KnownBug) -> tuple[int, int, int]:
    return (bug.last.major - bug.first.major, bug.last.minor - bug.first.minor, bug.last.micro - bug.first.micro)


def near_misses(found: Iterable[Applicability]) -> list[Applicability]:
    """Bugs that do not apply although their version, stage and (explaining a failure) symptom held: what a
    reader wants to see when nothing explains a result ("this text would be bug X, but the argv lacks ...")."""
    return [a for a in found if not a.holds
            and all(c.held for c in a.conditions if c.name in ("version", "stage", "symptom"))]


# ----------------------------------------------------------------------------------------- the database

def load_bugs(path: str | None = None) -> tuple[KnownBug, ...]:
    """The known bugs of ``path``, or (default) of every data layer: ours, then each layer's over it (a bug of
    an upper layer replaces ours of the same id, in its place; new ones follow)."""
    if path is not None:
        return _load_file(path, layer_of(path))
    return _load_layers(tuple(str(p) for p in bugs_files()))


@lru_cache(maxsize=4)
def _load_layers(paths: tuple[str, ...]) -> tuple[KnownBug, ...]:
    if len(paths) == 1:
        return _load_file(paths[0], layer_of(paths[0]))
    by_id: dict[str, KnownBug] = {}
    for path in paths:
        by_id.update((b.id, b) for b in _load_file(path, layer_of(path)))
    return tuple(by_id.values())


@lru_cache(maxsize=8)
def _load_file(path: str, layer: str = "") -> tuple[KnownBug, ...]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(f"malformed known-bugs file: {exc}", path=path) from None
    except OSError as exc:
        raise CaseError(f"cannot read the known-bugs file: {exc.strerror}", path=path) from None
    bugs = []
    for bug_id, raw in data.get("bugs", {}).items():
        try:
            unknown = set(raw) - _KEYS
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
            first, last = (QemuVersion.parse(v) for v in raw["affected"])
            match_ = raw.get("match", {})
            bugs.append(KnownBug(
                id=bug_id, title=raw["title"], first=first, last=last, fixed=raw.get("fixed", ""),
                stages=tuple(raw.get("stages", ())), signals=tuple(match_.get("signal", ())),
                patterns=tuple(re.compile(p) for p in match_.get("text", ())), needs=tuple(raw.get("needs", ())),
                side=_side_value(raw.get("side", "")),
                peer=_peer_range(raw["peer"]) if "peer" in raw else None,
                concerns=Concerns.from_toml(raw["concerns"]) if "concerns" in raw else None,
                reproduce=tuple(raw.get("reproduce", ())),
                arches=tuple(raw.get("arches", ())), cross_version=bool(raw.get("cross_version", False)),
                accels=tuple(raw.get("accels", ())), fixed_in_packages=_packages(raw.get("fixed_in_packages", [])),
                layer=layer,
            ))
        except (KeyError, ValueError, re.error) as exc:
            raise CaseError(f"known bug {bug_id}: bad entry ({exc})", path=path) from None
    return tuple(bugs)


_KEYS = {"title", "affected", "fixed", "stages", "match", "needs", "side", "peer", "concerns", "reproduce",
         "arches", "cross_version", "accels", "fixed_in_packages"}


def _packages(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, str) and v.removeprefix(">=").strip() for v in raw):
        raise ValueError('fixed_in_packages must be a list of package versions, e.g. ["1:7.2+dfsg-7+deb12u5"]')
    for entry in raw:
        debian_version_key(entry.removeprefix(">=").strip())  # ValueError when it is not a version
    return tuple(v.strip() for v in raw)


def package_covered(entry: str, package: str) -> bool:
    """Does ``fixed_in_packages`` entry ``entry`` ("V" exactly, or ">=V") cover package version ``package``?"""
    if entry.startswith(">="):
        try:
            return compare_debian_versions(package, entry[2:].strip()) >= 0
        except ValueError:
            return False  # a package string that is no Debian version is covered by no range
    return package == entry


def _order(c: str) -> int:
    """dpkg's character order in a version's non-digit parts: '~' first, then the end, letters, the rest."""
    return -1 if c == "~" else ord(c) if c.isalpha() else ord(c) + 256


Part = tuple[tuple[int, ...], int]  # a non-digit run (each character's order, then 0 for its end), a number


def debian_version_key(version: str) -> tuple[int, list[Part], list[Part]]:
    """A Debian package version [epoch:]upstream[-revision] split as dpkg compares it (Debian Policy 5.6.12);
    ValueError when it is not one."""
    text = version.strip()
    epoch_text, sep, rest = text.partition(":")
    if not sep:
        epoch_text, rest = "0", text
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    if not epoch_text.isdigit() or not upstream or not upstream[0].isdigit() \
            or not re.fullmatch(r"[A-Za-z0-9.+~:-]+", upstream) or not re.fullmatch(r"[A-Za-z0-9.+~]*", revision):
        raise ValueError(f"{version!r} is not a Debian package version")
    return int(epoch_text), _parts(upstream), _parts(revision)


def _parts(text: str) -> list[Part]:
    return [((*(_order(c) for c in letters), 0), int(digits or 0))
            for letters, digits in re.findall(r"(\D*)(\d*)", text) if letters or digits]


def compare_debian_versions(a: str, b: str) -> int:
    """<0, 0, >0 as dpkg --compare-versions orders ``a`` and ``b`` (a missing part counts as empty)."""
    (ea, ua, ra), (eb, ub, rb) = debian_version_key(a), debian_version_key(b)
    if ea != eb:
        return -1 if ea < eb else 1
    for x, y in ((ua, ub), (ra, rb)):
        empty: Part = ((0,), 0)
        for i in range(max(len(x), len(y))):
            p, q = (x[i] if i < len(x) else empty), (y[i] if i < len(y) else empty)
            if p != q:
                return -1 if p < q else 1
    return 0


def _peer_range(raw: list[str]) -> tuple[QemuVersion, QemuVersion]:
    first, last = (QemuVersion.parse(v) for v in raw)
    return first, last


def _side_value(side: str) -> str:
    if side not in ("", "source", "destination"):
        raise ValueError(f"side must be 'source' or 'destination', not {side!r}")
    return side


# ---------------------------------------------------------------------------- the three paths that ask

@dataclass
class Explanation:
    """What the rule says about one failure: the bugs that explain it (primary first) and every check."""

    facts: Facts
    checked: list[Applicability] = field(default_factory=list)

    @property
    def bugs(self) -> list[KnownBug]:
        return [a.bug for a in ranked(self.checked)]

    @property
    def primary(self) -> KnownBug | None:
        return next(iter(self.bugs), None)

    def record(self) -> dict[str, Any] | None:
        """The primary bug's record, the others under ``also`` (a result's ``details.known_bug``)."""
        bugs = self.bugs
        if not bugs:
            return None
        record: dict[str, Any] = bugs[0].record()
        if len(bugs) > 1:
            record["also"] = [b.record() for b in bugs[1:]]
        return record

    def why(self, label: str = "") -> str:
        """Which conditions held (for the bugs that apply) or failed (for the near misses), '' when neither;
        ``label`` (a migration side) heads each part."""
        held = ranked(self.checked)
        if held:
            return " | ".join(f"{label + ': ' if label else ''}{a.bug.id}: {a.why()}" for a in held)
        return " | ".join(f"{label + ' ' if label else ''}not {a.bug.id}: failed: {', '.join(c.says for c in a.failed)}"
                          for a in near_misses(self.checked))


def explain_failure(facts: Facts) -> Explanation:
    """The known bugs that explain a failure with these facts (every condition, the symptom included)."""
    return Explanation(facts, match(facts, "explain"))


def expected_bugs(facts: Facts) -> list[KnownBug]:
    """Bugs a plain run of ``facts.stage`` with ``facts.argv`` reproduces on this version (``reproduce``),
    given the features available: when that run passes, each of them is *not reproduced*."""
    return [a.bug for a in ranked(match(facts, "expect"))]


def fixed_by_package(facts: Facts) -> list[KnownBug]:
    """Bugs a plain run of ``facts.stage`` would reproduce on this version (``expect``) but for the build's
    package version, which a ``fixed_in_packages`` entry names: a pass then reads as *fixed in the package*."""
    return [a.bug for a in match(facts, "expect")
            if a.failed and all(c.name == "package" for c in a.failed)]


def bugs_concerning(version: QemuVersion, argv: list[str], arch: str = "", package: str = "",
                    memo: FlagMemo | None = None) -> list[KnownBug]:
    """Known bugs of this QEMU version whose configuration this argv has (the static flags): the same rule
    on what an argv says (version, arch, machine, concerns, and the package version when known: a bug a
    fixture's package has the fix for is not flagged); a bug that says no configuration is not flagged.
    ``memo``: what one caller keeps across its calls (FlagMemo)."""
    if memo is None:
        memo = FlagMemo()
    if not memo.bugs:
        memo.bugs = load_bugs()
        memo.anchored = frozenset(t for b in memo.bugs if b.concerns is not None for a in b.concerns.anchors for t in a)
    flaggable = _flaggable(version, arch, memo.bugs)
    if not flaggable:
        return []
    # the rule's version, machine and concerns conditions as plain tests first (the static stages ask for every
    # combination): the -devices' properties all together and the machine type first (no bug they rule out is
    # tested further), then the joined argv and each -device; ``check`` decides for the bugs that pass them
    devices = _device_tokens(argv, memo)
    tokens = frozenset().union(*devices)
    met = memo.anchored_bugs.get((id(flaggable), tokens))
    if met is None or met[0] is not flaggable:  # a function of the bugs and the tokens: kept for other argvs
        unmet = tokens.isdisjoint
        met = memo.anchored_bugs[(id(flaggable), tokens)] = (flaggable, [
            b for b in flaggable if b.concerns is not None and not any(map(unmet, b.concerns.anchors))])
    maybe = met[1]
    if not maybe:
        return []
    machine = argv_machine(argv)
    maybe = [b for b in maybe if b.concerns is not None
             and (b.concerns.machine is None or bool(machine and b.concerns.machine.search(machine)))]
    if not maybe:
        return []
    facts = Facts(version=version, stage="", arch=arch, argv=tuple(argv), package=package)
    candidates = [b for b in maybe if b.concerns is not None and b.concerns.may_match(facts.joined)
                  and b.concerns.devices_meet(devices)]
    # for the "concern" purpose check reads the version, arch, machine type, package and the concerns, which a
    # candidate has just passed with these same tests (_concerns): its verdict is kept per the others
    found = []
    for b in candidates:
        key = (id(b), version, arch, machine, package)
        kept = memo.holds.get(key)
        if kept is None or kept[0] is not b:
            kept = memo.holds[key] = (b, check(b, facts, "concern", full=False).holds)
        if kept[1]:
            found.append(b)
    return found


# (version, arch) -> (the database it was filtered from, the bugs bugs_concerning considers)
_FLAGGABLE: dict[tuple[QemuVersion, str], tuple[tuple[KnownBug, ...], tuple[KnownBug, ...]]] = {}


def _flaggable(version: QemuVersion, arch: str, bugs: tuple[KnownBug, ...] | None = None) -> tuple[KnownBug, ...]:
    """The bugs bugs_concerning considers for this version and arch, in file order: those that say a
    configuration, whose affected range has the version and whose arches (if any) have the arch. Filtered once
    per version and arch (and again when the database is reloaded), not for every argv; ``check`` still
    decides. ``bugs``: the database as the caller read it (default: load_bugs())."""
    if bugs is None:
        bugs = load_bugs()
    entry = _FLAGGABLE.get((version, arch))
    if entry is None or entry[0] is not bugs:
        entry = _FLAGGABLE[(version, arch)] = (bugs, tuple(
            b for b in bugs if b.concerns is not None and b.first <= version <= b.last
            and (not b.arches or (arch and arch in b.arches))))
    return entry[1]
