"""Boot once, migrate many (conformance/live/checked.py) and the wall-clock order of live items
(conformance/plan.py longest_first, conformance/runner.py estimate/durations), without QEMU."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from conformance.cases import load_catalogue
from conformance.live.checked import (
    HANDED_MAX,
    IDLE_SOURCES,
    CheckedState,
    CheckedStates,
    Resumable,
    argv_digest,
    comparable_argv,
    resolved_machine,
)
from conformance.plan import Planned, WorkItem, longest_first
from conformance.runner import chained, durations, estimate, save_durations
from conformance.stages import stage

ALIASES = {"q35": "pc-q35-7.2", "pc": "pc-i440fx-7.2"}.get


def test_the_machine_type_an_argv_runs_is_resolved_from_its_alias() -> None:
    assert resolved_machine(["qemu", "-machine", "q35,usb=off"], ALIASES) == "pc-q35-7.2"
    assert resolved_machine(["qemu", "-machine", "type=pc-q35-5.2,usb=off"], ALIASES) == "pc-q35-5.2"
    assert resolved_machine(["qemu", "-m", "256"], ALIASES) == ""


def test_two_sources_of_one_state_differ_only_by_folder_and_alias(tmp_path: Path) -> None:
    one, two = tmp_path / "checked", tmp_path / "pair" / "source"
    a = ["qemu", "-machine", "q35,usb=off", "-blockdev", f'{{"filename":"{one}/vda.qcow2"}}']
    b = ["qemu", "-machine", "pc-q35-7.2,usb=off", "-blockdev", f'{{"filename":"{two}/vda.qcow2"}}']
    assert comparable_argv(a, one, ALIASES) == comparable_argv(b, two, ALIASES)
    other = ["qemu", "-machine", "pc-q35-5.2,usb=off", "-blockdev", f'{{"filename":"{two}/vda.qcow2"}}']
    assert comparable_argv(a, one, ALIASES) != comparable_argv(other, two, ALIASES)
    assert argv_digest(b, two) == argv_digest([x.replace(str(two), str(one)) for x in b], one)
    assert argv_digest(b, two) != argv_digest(other, two)
    # the boot stage's alias and a migration's explicit type are one state's argv once the alias is resolved
    assert argv_digest(a, one, ALIASES) == argv_digest(b, two, ALIASES) != argv_digest(other, two, ALIASES)
    assert argv_digest(a, one) != argv_digest(b, two)


def _state(tmp_path: Path, key: tuple[str, str, str, str]) -> CheckedState:
    folder = tmp_path / key[1]
    folder.mkdir(exist_ok=True)
    (folder / "checked.state").write_bytes(b"state")
    return CheckedState(key, folder, ["qemu"], key[3], b"", 3, 0, [], "test")


def test_a_state_is_made_once_for_a_key_used_twice_and_its_file_goes_after_the_last_use(tmp_path: Path) -> None:
    key = (str(tmp_path), "case", "/qemu", "pc-q35-7.2")
    states = CheckedStates(Counter({key: 2}))
    made: list[int] = []

    def make() -> CheckedState:
        made.append(1)
        time.sleep(0.1)  # a second thread asking meanwhile waits for this one
        return _state(tmp_path, key)

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(states.get(key, "d", make))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and got[0] is got[1] and isinstance(got[0], CheckedState)
    state_file = got[0].state_file  # type: ignore[union-attr]
    states.used(key)
    assert state_file.exists()
    states.used(key)
    assert not state_file.exists()


def test_a_key_used_once_makes_no_state_and_a_reason_is_shared(tmp_path: Path) -> None:
    once = (str(tmp_path), "case", "/qemu", "pc-q35-5.2")
    states = CheckedStates(Counter({once: 1}))
    assert states.get(once, "d", lambda: pytest.fail("made for one use")) is None
    twice = (str(tmp_path), "case", "/qemu", "pc-q35-7.2")
    states = CheckedStates(Counter({twice: 3}))
    assert states.get(twice, "d", lambda: "the checked source did not boot") == "the checked source did not boot"
    assert states.get(twice, "d", lambda: pytest.fail("made twice")) == "the checked source did not boot"
    assert states.get(twice, "another argv") is None  # a state is only for its own argv


def test_close_deletes_every_state_file_left(tmp_path: Path) -> None:
    key = (str(tmp_path), "case", "/qemu", "pc-q35-7.2")
    states = CheckedStates(Counter({key: 5}))
    state = _state(tmp_path, key)
    states.add(key, "d", state)
    states.close()
    assert not state.state_file.exists()


def _planned(case: str, stage_name: str, build: str, arch: str = "x86_64", peer: str = "") -> Planned[object]:
    target = SimpleNamespace(caps=SimpleNamespace(arch=arch))
    return Planned(load_catalogue().get(case), stage(stage_name), target, target if peer else None,
                   WorkItem(case, stage_name, build, peer))


def test_longest_first_and_one_build_together_among_equals() -> None:
    seconds = {("a", "7.2"): 30.0, ("b", "10.0"): 5.0, ("c", "7.2"): 5.2, ("d", "10.0"): 5.1, ("e", "7.2"): 1.0}
    items = [_planned("q35-minimal", "boot", build) for (_, build) in seconds]
    named = {id(p): name for p, (name, _) in zip(items, seconds, strict=True)}
    order = longest_first(items, lambda p: seconds[(named[id(p)], p.item.build)])
    assert [named[id(p)] for p in order] == ["a", "d", "b", "c", "e"]


def test_an_estimate_knows_the_slow_cases() -> None:
    plain = estimate(_planned("q35-minimal", "migrate", "7.2.22-x86_64", peer="7.2.22-x86_64"))
    generic = estimate(_planned("pc-nic-rich", "migrate", "7.2.22-x86_64", peer="7.2.22-x86_64"))
    assert generic > 2 * plain
    assert estimate(_planned("q35-minimal", "boot", "7.2.22-x86_64")) < plain


def test_durations_are_merged_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMU_CONFORMANCE_CACHE", str(tmp_path))
    assert durations() == {}
    save_durations({"a.boot[7.2.22-x86_64]": 4.5})
    save_durations({"b.boot[7.2.22-x86_64]": 2.0})
    assert durations() == {"a.boot[7.2.22-x86_64]": 4.5, "b.boot[7.2.22-x86_64]": 2.0}
    (tmp_path / "durations.json").write_text("not json")
    assert durations() == {}


def test_a_state_that_raises_while_made_is_a_reason_not_an_error(tmp_path: Path) -> None:
    key = (str(tmp_path), "case", "/qemu", "pc-q35-7.2")
    states = CheckedStates(Counter({key: 2}))

    def make() -> CheckedState:
        raise OSError("disk full")

    found = states.get(key, "d", make)
    assert isinstance(found, str) and "OSError: disk full" in found


def _boot_run(tmp_path: Path, verdict: str, ended: bool) -> object:
    from conformance.live.boot import BootRun, NotUp
    from conformance.results.records import StageResult

    folder = tmp_path / "live" / "case" / "x86_64-5.2.0-abc"
    return BootRun(StageResult(case="case", stage="boot", verdict=verdict, reason="r"), argv=["qemu", str(folder)],
                   not_up=NotUp("source did not boot: boot timeout: no boot report in 60 s (nothing on the console)",
                                "", None, ended, folder))


@pytest.mark.parametrize(("verdict", "ended", "relied_on"), [
    ("known-bug", False, True),  # a hang a known bug explains (isa-vga-over-smram-pc)
    ("fail", True, True),  # QEMU ended by itself: did not start, crashed
    ("fail", False, False),  # a boot timeout nothing explains: the load may have caused it, boot again
])
def test_a_source_that_never_came_up_is_relied_on_only_with_evidence_the_load_cannot_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verdict: str, ended: bool, relied_on: bool) -> None:
    from conformance.live import migrate
    from conformance.live.checked import SourceDown

    key = (str(tmp_path), "case", "/qemu", "pc-i440fx-5.2")
    monkeypatch.setattr(migrate, "source_key", lambda *_a: key)
    states = CheckedStates(Counter({key: 3}))
    run = _boot_run(tmp_path, verdict, ended)
    target = SimpleNamespace(caps=SimpleNamespace(version="5.2.0", arch="x86_64"))
    migrate.note_boot(states, SimpleNamespace(name="case"), target, tmp_path, run)  # type: ignore[arg-type]
    found = states.get(key, argv_digest(run.argv, run.not_up.folder))  # type: ignore[attr-defined]
    if relied_on:
        assert isinstance(found, SourceDown)
        assert found.boot == f"boot case on QEMU 5.2.0 x86_64: {verdict} (live/case/x86_64-5.2.0-abc)"
        assert found.record()["why"].startswith("source did not boot")
    else:
        assert found is None


def test_the_stage_migrates_at_libvirts_bandwidth_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.live.migrate import LIBVIRT_BANDWIDTH, stage_bandwidth

    monkeypatch.delenv("QEMU_CONFORMANCE_MIGRATE_BANDWIDTH", raising=False)
    assert stage_bandwidth() == LIBVIRT_BANDWIDTH == 9223372036853727232
    monkeypatch.setenv("QEMU_CONFORMANCE_MIGRATE_BANDWIDTH", "64")
    assert stage_bandwidth() == 64 * 2**20
    monkeypatch.setenv("QEMU_CONFORMANCE_MIGRATE_BANDWIDTH", "0")
    assert stage_bandwidth() is None


def test_the_guest_heartbeat_is_half_a_second_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.live.boot import heartbeat_append

    monkeypatch.delenv("QEMU_CONFORMANCE_GUEST_HEARTBEAT", raising=False)
    assert heartbeat_append() == "guest.hb=0.5"
    monkeypatch.setenv("QEMU_CONFORMANCE_GUEST_HEARTBEAT", "1")
    assert heartbeat_append() == ""  # the guest's own period
    monkeypatch.setenv("QEMU_CONFORMANCE_GUEST_HEARTBEAT", "0.25")
    assert heartbeat_append() == "guest.hb=0.25"


class _Vm:
    """A kept source's VM, as far as CheckedStates needs one (stop)."""

    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


def _kept(vm: _Vm) -> Resumable:
    return Resumable(vm, None, {}, ["7.2.22->10.0.2"], 7)  # type: ignore[arg-type]


def test_a_kept_source_serves_the_next_migration_of_its_key_and_goes_after_the_last(tmp_path: Path) -> None:
    key = (str(tmp_path), "case", "/qemu", "pc-q35-7.2")
    states = CheckedStates(Counter({key: 3}))
    assert states.lend(key, "d") is None  # the first migration starts its own source
    first = _Vm()
    assert states.keep(key, "d", _kept(first))  # two more to run: kept
    states.used(key)
    assert states.lend(key, "another argv") is None  # only for its own argv
    assert states.keep(key, "another argv", None) is False
    lent = states.lend(key, "d")
    assert lent is not None and lent.vm is first
    assert states.keep(key, "d", lent)
    states.used(key)
    assert first.stopped == 0
    states.used(key)  # the last migration of the key: what is still kept is stopped
    assert first.stopped == 1 and states.lend(key, "d") is None


def test_no_source_is_kept_for_a_key_with_no_migration_left_nor_past_the_limit(tmp_path: Path) -> None:
    keys = [(str(tmp_path), "case", "/qemu", f"pc-q35-{n}.0") for n in range(IDLE_SOURCES + 1)]
    states = CheckedStates(Counter({k: 2 for k in keys}))
    kept = []
    for key in keys:
        assert states.lend(key, "d") is None
        kept.append(states.keep(key, "d", _kept(_Vm())))
    assert kept == [True] * IDLE_SOURCES + [False]
    last = (str(tmp_path), "case", "/qemu", "pc-q35-9.2")
    states = CheckedStates(Counter({last: 1}))
    assert states.lend(last, "d") is None
    assert states.keep(last, "d", _kept(_Vm())) is False
    vm = _Vm()
    states = CheckedStates(Counter({last: 2}))
    states.lend(last, "d")
    states.keep(last, "d", _kept(vm))
    states.close()
    assert vm.stopped == 1


def test_the_boot_stage_hands_its_vm_to_a_keys_one_migration_only(tmp_path: Path) -> None:
    once, twice = ((str(tmp_path), "case", "/qemu", m) for m in ("pc-q35-7.2", "pc-i440fx-7.2"))
    states = CheckedStates(Counter({once: 1, twice: 2}))
    vm = _Vm()
    handed = Resumable(vm, None, {}, [], 3, status="paused")  # type: ignore[arg-type]
    assert not states.hand(twice, "d", handed)  # several migrations share a saved state instead
    assert states.hand(once, "d", handed)
    assert not states.hand(once, "d", handed)  # one VM per key and argv
    assert states.take(once, "another argv") is None  # only for its own argv
    assert states.take(once, "d") is handed and states.take(once, "d") is None  # taken once
    # one its migration never took (a skip before the source starts) is stopped after the key's last use
    states.hand(once, "d", handed)
    states.used(once)
    assert vm.stopped == 1


def test_no_more_than_handed_max_vms_wait_for_their_migration(tmp_path: Path) -> None:
    keys = [(str(tmp_path), "case", "/qemu", f"pc-q35-{n}.0") for n in range(HANDED_MAX + 1)]
    states = CheckedStates(Counter({k: 1 for k in keys}))
    vms = [_Vm() for _ in keys]
    took = [states.hand(k, "d", Resumable(v, None, {}, [], None, status="paused"))  # type: ignore[arg-type]
            for k, v in zip(keys, vms, strict=True)]
    assert took == [True] * HANDED_MAX + [False]  # the one past the limit is saved instead
    states.close()
    assert [v.stopped for v in vms] == [1] * HANDED_MAX + [0]


def test_a_migration_waits_for_the_source_another_one_of_its_key_runs(tmp_path: Path) -> None:
    key = (str(tmp_path), "case", "/qemu", "pc-q35-7.2")
    states = CheckedStates(Counter({key: 2}))
    assert states.lend(key, "d") is None  # the first one runs ...
    vm = _Vm()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(states.lend(key, "d", wait=5.0)))
    waiter.start()
    time.sleep(0.1)
    assert not got  # ... the second waits for its source
    states.keep(key, "d", _kept(vm))
    waiter.join()
    assert got and getattr(got[0], "vm", None) is vm
    other = (str(tmp_path), "case", "/qemu", "pc-q35-5.2")
    states = CheckedStates(Counter({other: 2}))
    states.lend(other, "d")
    started = time.monotonic()
    threading.Timer(0.1, lambda: states.keep(other, "d", None)).start()  # it failed: nothing kept
    assert states.lend(other, "d", wait=5.0) is None and time.monotonic() - started < 2


def test_migrations_of_one_source_key_take_turns_a_few_keys_at_a_time() -> None:
    items = [f"{key}{n}" for key, count in (("a", 3), ("b", 2), ("c", 1), ("d", 2)) for n in range(count)]
    items.insert(3, "-")  # no key (a bisection, a skip): a turn of its own
    order = chained(items, lambda item: None if item == "-" else item[0], 2)  # type: ignore[arg-type]
    assert order == ["a0", "-", "a1", "b0", "a2", "b1", "c0", "d0", "d1"]


@pytest.mark.parametrize(("uses", "live", "loaded"), [
    # a key with one migration is saved only when HANDED_MAX boot VMs wait already (else it is handed over)
    (1, False, False),  # its one migration's restore loads it: not loaded twice
    (2, False, True),  # shared: loaded once first, so that a state that does not load spares every migration
    (1, True, True),  # saved running (failover before 9.0): its RAM must be compared with the saved guest's
])
def test_the_boot_stage_loads_a_new_state_only_when_more_than_its_restore_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uses: int, live: bool, loaded: bool) -> None:
    from conformance.live import migrate

    key = (str(tmp_path), "case", "/qemu", "pc-q35-7.2")
    monkeypatch.setattr(migrate, "source_key", lambda *_a: key)
    state = CheckedState(key, tmp_path, ["-machine", "q35"], "pc-q35-7.2", b"", 1, 0, [], "boot stage")
    monkeypatch.setattr(migrate, "save", lambda *_a: state)
    monkeypatch.setattr(migrate, "saved_live", lambda _p: live)
    calls: list[CheckedState] = []
    monkeypatch.setattr(migrate, "loads", lambda s, *_a: calls.append(s) or s)
    states = CheckedStates(Counter({key: uses}))
    monkeypatch.setattr(migrate, "hand_over", lambda *_a: None)
    monkeypatch.setattr(states, "hand", lambda *_a: False)  # HANDED_MAX wait already
    sent: list[str] = []
    vm = SimpleNamespace(process=SimpleNamespace(qmp=SimpleNamespace(cmd=lambda name, **_k: sent.append(name))))
    target = SimpleNamespace(caps=SimpleNamespace(version="7.2.22", arch="x86_64", machine=lambda _n: None))
    keep = migrate.keep_checked(states, SimpleNamespace(name="case"), target, None, tmp_path)  # type: ignore[arg-type]
    assert keep is not None
    prepared = SimpleNamespace(live=SimpleNamespace(argv=["-machine", "q35"]), vm_dir=tmp_path)
    said, took = keep(vm, prepared)  # type: ignore[arg-type]
    assert said.startswith("saved for the migrations") and not took
    assert sent == (["cont"] if uses == 1 else [])  # a VM paused for a hand-over that was refused runs again
    assert (calls == [state]) is loaded
    assert state.verified is loaded
    assert ("load_check" in state.saved) is not loaded


def test_a_state_not_loaded_after_its_save_that_does_not_load_is_no_error_of_the_migration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its one migration's restore is where it is loaded first: a load that fails there is raised as _Unloaded
    (the caller makes the finding and boots the source, as ``loads`` would have led to); a failure once it
    loaded, or of a state loaded before, stays an error of the suite."""
    from conformance.live import migrate
    from conformance.live.checked import RestoreFailed

    state = CheckedState(("o", "case", "/qemu", "pc-q35-7.2"), tmp_path, [], "pc-q35-7.2", b"", 1, 0, [], "boot stage")
    prep = SimpleNamespace(case=SimpleNamespace(name="case"), target=SimpleNamespace(caps=None))
    monkeypatch.setattr(migrate, "pair_label", lambda *_a: "7.2.22 -> 7.2.22")
    monkeypatch.setattr(migrate, "_alias_to", lambda _c: None)
    phase: dict[str, str] = {}

    def restore(*_a: object, **_k: object) -> None:
        raise RestoreFailed("restoring the checked source failed: QEMU is gone after the load, not paused",
                            {"restored": {}, **phase})

    monkeypatch.setattr(migrate, "restore", restore)

    def run() -> tuple[str, str, object]:
        return migrate._restore_then_migrate(state, prep, prep, [], None, {}, tmp_path)  # type: ignore[arg-type]

    assert run()[0] == "error"  # verified (the default): as before
    state.verified = False
    assert run()[0] == "error"  # not a load failure (after cont: the proof of identity)
    phase["restore_phase"] = "load"
    with pytest.raises(migrate._Unloaded) as raised:
        run()
    assert raised.value.failure.evidence["restore_phase"] == "load"
    state.verified = True
    assert run()[0] == "error"


def test_the_stages_overlap_a_migration_starting_once_its_boot_is_done(tmp_path: Path) -> None:
    """The live executor: at most ``jobs`` items at a time and each stage's limit (boots: the cores), and a
    migration only after the boot it waits for (runner.boot_first), not after every boot."""
    from conformance.results.records import ResultWriter, StageResult
    from conformance.runner import LiveStage, _run_live

    cases = ["q35-minimal", "pc-minimal", "teaming-q35"]
    catalogue = load_catalogue()
    target = SimpleNamespace(caps=SimpleNamespace(arch="x86_64", version="7.2.22"))
    boots = [Planned(catalogue.get(case), stage("boot"), target, None, WorkItem(case, "boot", "7.2.22-x86_64"))
             for case in cases]
    migrations = [Planned(catalogue.get(case), stage("migrate"), target, target,
                          WorkItem(case, "migrate", "7.2.22-x86_64", "7.2.22-x86_64")) for case in cases]
    lock = threading.Lock()
    events: list[tuple[str, str, str]] = []  # (start|end, stage, case)
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()

    def runner(stage_name: str, seconds: dict[str, float]) -> object:
        def run(case: object, _build: object, _peer: object, _machine: str) -> StageResult:
            name = case.name  # type: ignore[attr-defined]
            with lock:
                events.append(("start", stage_name, name))
                running[stage_name] += 1
                running["all"] += 1
                for k, v in running.items():
                    most[k] = max(most[k], v)
            time.sleep(seconds[name])
            with lock:
                events.append(("end", stage_name, name))
                running[stage_name] -= 1
                running["all"] -= 1
            return StageResult(case=name, stage=stage_name, verdict="pass", details={"cpu_s": 1.0})
        return run

    boot_s = {"q35-minimal": 0.1, "pc-minimal": 0.3, "teaming-q35": 0.5}
    stages = [LiveStage("boot", boots, runner("boot", boot_s), 2),  # type: ignore[arg-type]
              LiveStage("migrate", migrations, runner("migrate", dict.fromkeys(cases, 0.05)), 4)]  # type: ignore[arg-type]
    lines: list[str] = []
    counts = _run_live(stages, ResultWriter(tmp_path), lines.append, 4,
                       after={id(m): b for m, b in zip(migrations, boots, strict=True)})  # type: ignore[arg-type]
    assert counts == Counter({"pass": 6})
    assert most["boot"] == 2 and most["all"] <= 4
    for case in cases:
        assert events.index(("end", "boot", case)) < events.index(("start", "migrate", case))
    # q35-minimal's migration ran while the other boots still ran: the stages overlapped
    assert events.index(("end", "migrate", "q35-minimal")) < events.index(("end", "boot", "teaming-q35"))
    assert any(line.startswith("  boot: 3 runs in") and "(3.0 QEMU CPU s)" in line for line in lines), lines
    assert any(line.startswith("  migrate: 3 runs in") for line in lines), lines


def test_the_default_jobs_are_the_cores_for_boots_and_more_for_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import runner

    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert runner.live_jobs(None) == (2 + runner.LATENCY_JOBS, 2)
    assert runner.live_jobs(1) == (1, 1)  # --jobs 1: one item at a time
    assert runner.live_jobs(6) == (6, 2)  # boots never more than the cores


def test_items_that_boot_a_guest_run_at_most_their_limit_at_once(tmp_path: Path) -> None:
    """Migrations that boot their own source count against the boots' limit (runner.cpu_bound); the others fill
    the remaining jobs."""
    from conformance.results.records import ResultWriter, StageResult
    from conformance.runner import LiveStage, _run_live

    catalogue = load_catalogue()
    target = SimpleNamespace(caps=SimpleNamespace(arch="x86_64", version="7.2.22"))
    cases = ["q35-minimal", "pc-minimal", "teaming-q35", "balloon-rng", "disk-virtio-raw", "video-none"]
    work = [Planned(catalogue.get(case), stage("migrate"), target, target,
                    WorkItem(case, "migrate", "7.2.22-x86_64", "7.2.22-x86_64")) for case in cases]
    heavy = {id(p) for p in work[:4]}
    lock = threading.Lock()
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()

    def run(case: object, _build: object, _peer: object, _machine: str) -> StageResult:
        kind = "heavy" if case.name in cases[:4] else "light"  # type: ignore[attr-defined]
        with lock:
            running[kind] += 1
            running["all"] += 1
            for k, v in running.items():
                most[k] = max(most[k], v)
        time.sleep(0.1)
        with lock:
            running[kind] -= 1
            running["all"] -= 1
        return StageResult(case=case.name, stage="migrate", verdict="pass")  # type: ignore[attr-defined]

    counts = _run_live([LiveStage("migrate", work, run, 4)], ResultWriter(tmp_path), lambda _line: None, 4,
                       heavy=(heavy, 2))
    assert counts == Counter({"pass": 6})
    assert most["heavy"] == 2 and most["all"] == 4
