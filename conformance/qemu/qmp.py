"""One QMP conversation: QmpSession.

A synchronous face over qemu.qmp's asyncio ``QMPClient``, with a private event
loop per session, so two sessions (a migration's source and destination) can
be driven from one thread, one after the other.

- Errors are typed and keep their payload: ``QmpCommandFailed`` (QEMU answered
  with an error: its class, its text, the command and arguments sent) and
  ``QmpMonitorGone`` (no answer: QEMU died, the socket closed, the deadline
  passed). Both are ``QmpError``.
- Every waiter has its own event queue (``listen``): an event reaches every
  listener, and one waiter taking an event never hides it from another. A
  listener replays the events that arrived before it was made, unless told not
  to, so a wait that starts late still sees an early event. ``events`` is the
  whole history.
- ``cmd_many`` sends several commands at once and collects the replies (the
  probe asks ~200 questions in two round trips).
- Every command, reply, error and event is a JSON line in the transcript
  (``qmp.jsonl``) with a monotonic time stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from conformance.errors import LiveError

Event = dict[str, Any]
EventMatch = Callable[[Event], bool]


class QmpError(LiveError):
    """A QMP conversation did not give what was asked."""


class QmpCommandFailed(QmpError):
    """QEMU answered a command with an error (``{"error": {"class": ..., "desc": ...}}``)."""

    def __init__(self, command: str, arguments: dict[str, Any] | None, error_class: str, desc: str) -> None:
        self.command = command
        self.arguments = dict(arguments or {})
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QMP {command} failed: {desc} ({error_class})")


class QmpMonitorGone(QmpError):
    """No answer: the monitor closed, QEMU died, or the deadline passed."""

    def __init__(self, command: str | None, cause: str) -> None:
        self.command = command
        self.cause = cause
        super().__init__(f"QMP {command}: monitor gone ({cause})" if command else f"QMP: monitor gone ({cause})")


class EventListener:
    """One waiter's own queue of QMP events (see ``QmpSession.listen``)."""

    def __init__(self, session: QmpSession, names: Iterable[str] | None, replay: bool) -> None:
        self.session = session
        self.names = frozenset(names) if names is not None else None
        self.queue: list[Event] = [e for e in session.events if self.accepts(e)] if replay else []

    def accepts(self, event: Event) -> bool:
        return self.names is None or event.get("event") in self.names

    def get(self, timeout: float, match: EventMatch | None = None,
            alive: Callable[[], bool] | None = None) -> Event | None:
        """The first queued event that ``match``es (taken off the queue); None when the deadline passes
        or ``alive`` says to stop waiting. Unmatched events stay queued for later calls."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.queue):
                if match is None or match(event):
                    return self.queue.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or (alive is not None and not alive()):
                return None
            self.session.poll(min(left, 0.05))

    def drain(self) -> list[Event]:
        """Everything queued now (after a look for new events), emptying the queue."""
        self.session.poll()
        taken, self.queue = self.queue, []
        return taken

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.session.listeners.remove(self)


@functools.cache
def _quiet_client_class() -> Any:
    """A qemu.qmp QMPClient whose message hooks format a message for the debug log only when that log is on:
    the library's own hooks call str() on every message (a JSON dump of each reply: 0.9 s of the 6 probes of a
    cached vmstate sweep). The hooks are the library's documented extension points for subclasses. Made once,
    on first use: qemu.qmp is imported only by runs that talk to a QEMU."""
    import logging

    from qemu.qmp import QMPClient

    class QuietClient(QMPClient):
        def _cb_outbound(self, msg: Any) -> Any:
            if self.logger.isEnabledFor(logging.DEBUG):
                return super()._cb_outbound(msg)
            return msg

        def _cb_inbound(self, msg: Any) -> Any:
            if self.logger.isEnabledFor(logging.DEBUG):
                return super()._cb_inbound(msg)
            return msg

    return QuietClient


def _quiet_client(name: str) -> Any:
    return _quiet_client_class()(name)


class QmpSession:
    """Synchronous QMP over qemu.qmp on an already connected socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, transcript: Path | None = None, *, name: str = "qmp") -> None:
        self._sock = sock
        self._loop = asyncio.new_event_loop()
        self._client = _quiet_client(name)
        self._transcript = transcript.open("a", encoding="utf-8") if transcript else None
        self.events: list[Event] = []
        self.listeners: list[EventListener] = []
        self.greeting: dict[str, Any] | None = None
        self.gone: str | None = None  # why the monitor stopped answering, once it did

    # --- plumbing -------------------------------------------------------------------------------
    def _log(self, direction: str, message: object) -> None:
        if self._transcript:
            self._transcript.write(json.dumps({"t": round(time.monotonic(), 4), direction: message}) + "\n")
            self._transcript.flush()

    def _run(self, coro: Any, timeout: float) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def _take_events(self, first: Sequence[Event] = ()) -> list[Event]:
        new = [dict(e) for e in (*first, *self._client.events.clear())]
        for event in new:
            self._log("event", event)
            self.events.append(event)
            for listener in self.listeners:
                if listener.accepts(event):
                    listener.queue.append(event)
        return new

    # --- the conversation -----------------------------------------------------------------------
    def connect(self, timeout: float = 5.0) -> dict[str, Any]:
        from qemu.qmp import QMPError

        try:
            self._run(self._client.connect(self._sock), timeout)
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            self.gone = f"handshake failed: {exc or type(exc).__name__}"
            raise QmpMonitorGone(None, self.gone) from None
        greeting = self._client.greeting
        self.greeting = dict(getattr(greeting, "_raw", None) or {})  # qemu.qmp keeps the message as sent
        self._log("greeting", self.greeting)
        return self.greeting

    def cmd(self, name: str, timeout: float = 30.0, **arguments: Any) -> Any:
        """Run one command; its ``return`` value, or QmpCommandFailed / QmpMonitorGone."""
        return self._checked(self.cmd_many([(name, arguments)], timeout=timeout)[0])

    def cmd_many(self, commands: Sequence[tuple[str, dict[str, Any]]], timeout: float = 30.0) -> list[Any]:
        """Send all commands at once; each reply in order, a QmpCommandFailed in place of an error reply.

        Raises QmpMonitorGone when the monitor does not answer them all within ``timeout``.
        """
        from qemu.qmp import ExecuteError, QMPError

        if self.gone:
            raise QmpMonitorGone(commands[0][0] if commands else None, self.gone)

        async def ask(name: str, arguments: dict[str, Any]) -> Any:
            self._log("execute", {"execute": name, "arguments": arguments} if arguments else {"execute": name})
            try:
                reply = await self._client.execute(name, arguments or None)
            except ExecuteError as exc:
                failure = QmpCommandFailed(name, arguments, exc.error_class, exc.error.error.desc)
                self._log("error", {"execute": name, "class": failure.error_class, "desc": failure.desc})
                return failure
            self._log("return", reply)
            return reply

        async def ask_all() -> list[Any]:
            return list(await asyncio.gather(*(ask(n, a) for n, a in commands)))

        try:
            return self._run(ask_all(), timeout)
        except TimeoutError:
            cause = f"no answer within {timeout:g} s"
            self._log("error", {"execute": [n for n, _ in commands], "error": cause})
            raise QmpMonitorGone(commands[0][0] if len(commands) == 1 else "commands", cause) from None
        except (QMPError, OSError, EOFError) as exc:
            self.gone = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._log("error", {"execute": [n for n, _ in commands], "error": self.gone})
            raise QmpMonitorGone(commands[0][0] if len(commands) == 1 else "commands", self.gone) from None
        finally:
            self._take_events()

    @staticmethod
    def _checked(reply: Any) -> Any:
        if isinstance(reply, QmpCommandFailed):
            raise reply
        return reply

    # --- events ---------------------------------------------------------------------------------
    def poll(self, wait: float = 0.0) -> list[Event]:
        """Events that arrived since the last look, waiting up to ``wait`` s for the first one."""
        if self.gone:
            return []

        async def first() -> list[Event]:
            try:
                return [await asyncio.wait_for(self._client.events.get(), wait or 0.001)]
            except TimeoutError:
                return []

        return self._take_events(self._loop.run_until_complete(first()))

    def listen(self, names: str | Iterable[str] | None = None, *, replay: bool = True) -> EventListener:
        """A new waiter with its own queue of the events named (all when None); with ``replay``, the
        events that already arrived are queued first."""
        listener = EventListener(self, [names] if isinstance(names, str) else names, replay)
        self.listeners.append(listener)
        return listener

    def wait_event(self, names: str | Iterable[str], timeout: float, match: EventMatch | None = None,
                   alive: Callable[[], bool] | None = None) -> Event | None:
        """The first event so far or within ``timeout`` that is named and matches (a one-off waiter)."""
        listener = self.listen(names)
        try:
            return listener.get(timeout, match, alive)
        finally:
            listener.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._client.disconnect(), 2.0)
        with contextlib.suppress(Exception):
            self._loop.close()
        if self._transcript:
            self._transcript.close()
            self._transcript = None

