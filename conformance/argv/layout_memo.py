"""The device layout of one parsed domain (libvirt's post-parse defaults, conformance/argv/defaults.py, then the
PCI addresses, conformance/argv/pci.py) reused across the fixtures that answer it the same way.

The static stages build one parsed domain's argv on many fixtures; its implicit devices, aliases and PCI
addresses read only a few of a fixture's answers (whether QEMU has qemu-xhci, lsi, pcie-pci-bridge, the machine
family...). A LayoutMemo records, while the two steps run, every answer they read: each attribute of the build
context that the steps do not write themselves (arch, machine type and its family, the firmware libvirt picked,
...) and each capability read or asked (``caps.has(flag)`` with its answer). It keeps the context's state after
the steps. Another build of the same domain object whose context and capabilities give the same answers (same
type, equal value) to the same questions, in order, gets that state (lists and dicts copied) instead of
running the steps: the steps are deterministic functions of the domain, those answers and the fresh context
they start from, so they would have produced the same state. A step that raises is not kept (a later build
runs it again). Only successes are reused, and firmware (run between the two steps, as build_argv runs them)
is run for every build, so errors surface as without the memo.

The devices the steps create (controller copies, implicit devices, addresses) are shared by the builds that
reuse them: no later step mutates a device (they read them and fill the context's own dicts and lists).

The device steps after the layout (conformance/argv/builder.py, from the IOMMU to the last option) are kept the
same way, as one step (LayoutMemo.step), per kept layout: the answers they read, the state they read and
wrote, the argv they added. Across fixtures they differ mostly in the option syntax (JSON -device, -blockdev),
so most builds reuse them. The machine steps before them read the machine type's versioned name, so they run
for every build.
Active only where a LayoutMemo is set in LAYOUTS (the static stages, conformance/static.py); benchmarks/
static_outputs.py proves the argvs, verdicts and reasons identical with and without it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import fields
from typing import Any

from conformance.argv.context import Ctx

# the context's fields the layout steps write (its state); every other attribute they read is an answer
_FIXED = {"domain", "caps", "arch", "machine_name", "machine", "pflash", "bios"}
_STATE = tuple(f.name for f in fields(Ctx) if f.name not in _FIXED)
_PLAIN = (str, int, float, bool, type(None))
MAX_LAYOUTS = 16  # per domain: different answers beyond that are built without the memo

LAYOUTS: ContextVar[LayoutMemo | None] = ContextVar("LAYOUTS", default=None)


_UNCOMPARABLE = ("uncomparable",)  # a read whose answer cannot be asked again (a callable argument...)


class _ReadingCaps:
    """The capabilities as a step sees them, each attribute read and each method call (with plain arguments)
    recorded with its answer."""

    __slots__ = ("_calls", "_caps", "_reads")

    def __init__(self, caps: Any, reads: list[tuple[Any, ...]]) -> None:
        self._caps = caps
        self._reads = reads
        self._calls: dict[str, Callable[..., Any]] = {}  # a method's recording wrapper, made once per view

    def __getattr__(self, name: str) -> Any:
        call = self._calls.get(name)
        if call is not None:
            return call
        value = getattr(self._caps, name)
        if isinstance(value, types.MethodType):
            call = self._calls[name] = self._method(name, value)
            return call
        self._reads.append(("caps", name, value))
        return value

    def _method(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if all(isinstance(a, _PLAIN) for a in (*args, *kwargs.values())):
                self._reads.append(("call", name, args, tuple(sorted(kwargs.items())), result))
            else:  # the layout is not kept
                self._reads.append(_UNCOMPARABLE)
            return result
        return call


class _ReadingCtx:
    """The build context as a step sees it: its state read and written through, every other attribute read
    recorded with its value; the context's methods and properties run on this view, so what they read is
    recorded too (the class gets a descriptor per state field and method below: no lookup fails for them)."""

    __slots__ = ("_caps", "_ctx", "_reads")

    def __init__(self, ctx: Ctx, reads: list[tuple[Any, ...]]) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_caps", _ReadingCaps(ctx.caps, reads))

    @property
    def caps(self) -> Any:
        return self._caps

    @property
    def domain(self) -> Any:
        return self._ctx.domain  # the memo's key (the same object), not an answer

    def __getattr__(self, name: str) -> Any:  # the answers: fixed fields and what __post_init__ derives
        value = getattr(self._ctx, name)
        self._reads.append(("ctx", name, value))
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _STATE:  # a step that sets an answer: its layout is not kept
            self._reads.append(_UNCOMPARABLE)
        setattr(self._ctx, name, value)


def _through(name: str) -> property:
    return property(lambda view: getattr(view._ctx, name))


# the answers the steps read most (the fixed fields and what Ctx.__post_init__ derives): a recording property each
# on the views, which records as __getattr__ does without a failed lookup first (__getattr__ records the others)
_ANSWERS = ("arch", "machine_name", "machine", "pflash", "bios", "json_device", "json_netdev", "json_object",
            "blockdev", "modern_libvirt", "is_i440fx", "is_q35", "is_x86", "is_isapc", "is_arm_virt", "is_s390",
            "supports_pci", "pci_multibus", "is_arm_usb_board")


def _answer(name: str) -> property:
    def get(view: Any) -> Any:
        value = getattr(view._ctx, name)
        view._reads.append(("ctx", name, value))
        return value
    return property(get)


for _name in _STATE:
    setattr(_ReadingCtx, _name, _through(_name))
for _name in _ANSWERS:
    setattr(_ReadingCtx, _name, _answer(_name))
for _name, _found in vars(Ctx).items():
    if isinstance(_found, (types.FunctionType, property)) and not _name.startswith("__"):
        setattr(_ReadingCtx, _name, _found)  # runs on the view


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _answers(reads: list[tuple[Any, ...]], ctx: Ctx) -> bool:
    """Whether this context and its capabilities give the recorded answers (each _same as recorded)."""
    caps = ctx.caps
    for read in reads:
        kind, name = read[0], read[1]
        if kind == "ctx":
            now = getattr(ctx, name)
        elif kind == "caps":
            now = getattr(caps, name)
        else:
            now = getattr(caps, name)(*read[2], **dict(read[3]))
        was = read[-1]
        if type(now) is not type(was) or now != was:  # _same (same type: != is not ==)
            return False
    return True


def _questions(reads: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Each question once, at its first place: while a step runs, its answers cannot change (it writes no
    answer, the capabilities are immutable), so a repeated question gets the same answer when checked again."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for read in reads:
        if read[:-1] not in seen:
            seen.add(read[:-1])
            out.append(read)
    return out


def _state(ctx: Ctx) -> dict[str, Any]:
    out = {}
    for name in _STATE:
        value = getattr(ctx, name)
        out[name] = list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
    return out


class LayoutMemo:
    """The layouts computed so far, per parsed domain (kept alive here, so its id stays its own)."""

    def __init__(self) -> None:
        # id(domain) -> (domain, [(answers before firmware, answers after it, state after the steps)])
        self._layouts: dict[int, tuple[Any, list[tuple[list[Any], list[Any], dict[str, Any]]]]] = {}
        self.reused = self.built = 0
        # the build whose steps may be reused: (its context, the kept layout state it got or left); None: none
        self._laid: tuple[Ctx, dict[str, Any]] | None = None
        # (id(layout state), step) -> [(answers, state read at entry, argv added, state written)]
        self._steps: dict[tuple[int, Callable[[Any], None]], list[tuple[list[Any], list[tuple[str, Any]],
                                                                         list[str], list[tuple[str, Any]]]]] = {}
        self.steps_reused = self.steps_run = 0

    def lay_out(self, ctx: Ctx, before: Callable[[Any], None], firmware: Callable[[Ctx], None],
                after: Callable[[Any], None]) -> None:
        """before(ctx); firmware(ctx); after(ctx) -- or the state they left for the same answers."""
        self._laid = None
        entry = self._layouts.get(id(ctx.domain))
        if entry is not None and entry[0] is not ctx.domain:
            entry = None
        if entry is not None:
            fired = False
            for answers_before, answers_after, state in entry[1]:
                if not _answers(answers_before, ctx):
                    continue
                if not fired:  # before() succeeded on these answers: firmware runs next, as without the memo
                    firmware(ctx)
                    fired = True
                if _answers(answers_after, ctx):
                    fields = vars(ctx)  # a plain dataclass: setting its fields is setting these entries
                    for name, value in state.items():
                        kind = type(value)
                        fields[name] = list(value) if kind is list else dict(value) if kind is dict else value
                    self.reused += 1
                    self._laid = (ctx, state)
                    return
            if fired:
                ctx.pflash = ctx.bios = None  # as fresh as new_context left it
        self.built += 1
        reads_before: list[Any] = []
        reads_after: list[Any] = []
        before(_ReadingCtx(ctx, reads_before))
        firmware(ctx)
        after(_ReadingCtx(ctx, reads_after))
        if any(r is _UNCOMPARABLE for r in (*reads_before, *reads_after)):
            return
        if entry is None:
            entry = self._layouts[id(ctx.domain)] = (ctx.domain, [])
        if len(entry[1]) < MAX_LAYOUTS:
            entry[1].append((_questions(reads_before), _questions(reads_after), _state(ctx)))
            self._laid = (ctx, entry[1][-1][2])

    def step(self, ctx: Ctx, step: Callable[[Any], None]) -> None:
        """step(ctx) -- or what it added to the argv and wrote to the context's state, for the same answers.

        A step after the layout reads answers (as the layout steps do) and the context's state, adds to the
        argv and writes state. It is kept per layout (the kept layout state's identity: the same devices) with
        the answers it read, the state fields it read (their values at entry; a field is read before it
        changes), the argv it added and the state fields it changed. Another build with the same layout,
        answers and state read gets the same argv added and state written. A step that reads the argv built
        so far, or writes an answer, is not kept; nor is a step of a build whose layout was not kept."""
        laid = self._laid
        if laid is None or laid[0] is not ctx:
            step(ctx)
            return
        key = (id(laid[1]), step)
        kept = self._steps.get(key)
        if kept is not None:
            for answers, read, added, written in kept:
                if _answers(answers, ctx) and _state_is(ctx, read):
                    ctx.argv += added
                    for name, value in written:
                        setattr(ctx, name, _copy(value))
                    self.steps_reused += 1
                    return
        self.steps_run += 1
        reads: list[Any] = []
        argv = _ArgvSoFar(ctx.argv)
        view = _StepCtx(ctx, reads, argv)
        step(view)
        added = list.__getitem__(argv, slice(len(ctx.argv), None))
        ctx.argv += added
        if argv.read or any(r is _UNCOMPARABLE for r in reads):
            return
        if kept is None:
            kept = self._steps[key] = []
        if len(kept) < MAX_LAYOUTS:
            read = list(view._read.items())  # a state field can only change after it was read
            written = [(name, _copy(getattr(ctx, name))) for name, value in read
                       if not _same(getattr(ctx, name), value)]
            kept.append((_questions(reads), read, added, written))


_STEP_STATE = tuple(name for name in _STATE if name != "argv")


def _state_is(ctx: Ctx, read: list[tuple[str, Any]]) -> bool:
    """Whether each of these state fields of the context is _same as the value given."""
    for name, value in read:
        now = getattr(ctx, name)
        if type(now) is not type(value) or now != value:
            return False
    return True


def _copy(value: Any) -> Any:
    """Lists and dicts copied all the way down (a step may extend a list inside a dict), other values kept."""
    if isinstance(value, list):
        return [_copy(v) if isinstance(v, (list, dict)) else v for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) if isinstance(v, (list, dict)) else v for k, v in value.items()}
    return value


class _ArgvSoFar(list):  # type: ignore[type-arg]
    """The argv built so far as one step sees it (a copy it extends): reading it marks the step as one that
    depends on it."""

    __slots__ = ("read",)

    def __init__(self, items: list[str]) -> None:
        super().__init__(items)
        self.read = False


def _reading(name: str) -> Callable[..., Any]:
    method = getattr(list, name)

    def reading(self: _ArgvSoFar, *args: Any) -> Any:
        self.read = True
        return method(self, *args)
    return reading


for _name in ("__iter__", "__reversed__", "__contains__", "__getitem__", "__len__", "__eq__", "__ne__", "__lt__",
              "__le__", "__gt__", "__ge__", "__add__", "__mul__", "__rmul__", "__repr__", "index", "count", "copy"):
    setattr(_ArgvSoFar, _name, _reading(_name))


class _StepCtx:
    """The build context as a step after the layout sees it: answers recorded as _ReadingCtx records them, the
    state fields it reads noted, the argv built so far given as an _ArgvSoFar."""

    __slots__ = ("_argv", "_caps", "_ctx", "_read", "_reads")

    def __init__(self, ctx: Ctx, reads: list[tuple[Any, ...]], argv: _ArgvSoFar) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_caps", _ReadingCaps(ctx.caps, reads))
        object.__setattr__(self, "_argv", argv)
        object.__setattr__(self, "_read", {})

    caps = _ReadingCtx.caps
    domain = _ReadingCtx.domain
    __getattr__ = _ReadingCtx.__getattr__

    @property
    def argv(self) -> _ArgvSoFar:
        return self._argv

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "argv":
            if value is not self._argv:
                self._reads.append(_UNCOMPARABLE)
            return
        if name not in _STATE:
            self._reads.append(_UNCOMPARABLE)
        elif name not in self._read:  # a write without a read: noted as read, so its entry value is compared
            self._read[name] = _copy(getattr(self._ctx, name))
        setattr(self._ctx, name, value)


def _noting(name: str) -> property:
    def get(view: _StepCtx) -> Any:
        value = getattr(view._ctx, name)
        if name not in view._read:  # its value at entry: the first read comes before any change
            view._read[name] = _copy(value)
        return value
    return property(get)


for _name in _STEP_STATE:
    setattr(_StepCtx, _name, _noting(_name))
for _name in _ANSWERS:
    setattr(_StepCtx, _name, _answer(_name))
for _name, _found in vars(Ctx).items():
    if isinstance(_found, (types.FunctionType, property)) and not _name.startswith("__"):
        setattr(_StepCtx, _name, _found)  # runs on the view
