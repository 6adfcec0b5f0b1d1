"""Request/reply bookkeeping for one OpenFlow connection.

os-ken delivers replies on its own threads; the reconciler of a datapath runs
on another and waits here. A request registers its xid before it is sent, the
os-ken handlers resolve it (reply, error, or the last part of a multipart
reply), and errors for xids nobody waits on (the adds inside a bundle) are kept
so the reconciler can attribute them after the commit.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from controller.core import ofmsg


class OpenFlowError(Exception):
    """An OFPT_ERROR from the switch; `data` holds the start of the offending message.

    A plain class, not a frozen dataclass: Python sets `__traceback__` on every
    raise, and an exception stored in a future is raised again by each waiter.
    """

    def __init__(self, xid: int, type: int, code: int | None, data: bytes = b"") -> None:
        super().__init__(xid, type, code, data)
        self.xid = xid
        self.type = type
        self.code = code
        self.data = data

    def __str__(self) -> str:
        return f"OpenFlow error type={self.type} code={self.code} (xid {self.xid})"


class SwitchDisconnected(Exception):
    pass


# Bounded so a switch that keeps rejecting cannot grow memory without limit.
_MAX_KEPT_ERRORS = 100_000
# Flow-monitor notes kept until the reconciler takes them; beyond, they are dropped
# and the batch says so (the reconciler then re-sends everything it wants).
_MAX_KEPT_UPDATES = 200_000


@dataclass(frozen=True, slots=True)
class FlowUpdates:
    """What the switch's flow monitor reported since the last `take_flow_updates`.

    `changes`: (event, table, cookie) of flows another connection added, deleted or
    modified. `paused`: the switch paused its notes meanwhile (its buffer filled) or
    still does, so `changes` may miss additions. `overflowed`: notes were dropped here.
    """

    changes: tuple[tuple[int, int, int], ...] = ()
    paused: bool = False
    overflowed: bool = False


class SwitchChannel:
    """One live OpenFlow connection as the reconciler sees it."""

    def __init__(
        self,
        datapath_id: int,
        send: Callable[[bytes], bool],
        *,
        allow_silence: Callable[[float], None] | None = None,
    ) -> None:
        self.datapath_id = datapath_id
        self._send = send
        self._allow_silence = allow_silence
        self._lock = threading.Lock()
        self._xids = itertools.count(1)
        self._pending: dict[int, Future[bytes]] = {}
        self._parts: dict[int, list[bytes]] = {}
        self._errors: dict[int, OpenFlowError] = {}
        self._connected = True
        self._updates: list[tuple[int, int, int]] = []
        self._paused = False  # between ONFT_FLOW_MONITOR_PAUSED and ..._RESUMED
        self._was_paused = False  # a pause began since the last take
        self._overflowed = False
        self._on_change: Callable[[], None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def next_xid(self) -> int:
        # xid 0 is left alone: some switches use it for unsolicited messages.
        with self._lock:
            return next(self._xids) & 0xFFFFFFFF or next(self._xids)

    def reserve_xids(self, count: int) -> int:
        """The first of `count` consecutive xids nobody else gets (a bundle's adds)."""
        with self._lock:
            first = next(self._xids) & 0xFFFFFFFF or next(self._xids)
            if first + count > 0xFFFFFFFF:  # would wrap: start again from 1
                self._xids = itertools.count(1)
                first = next(self._xids)
            self._xids = itertools.count(first + count)
        return first

    def expect(self, xid: int) -> Future[bytes]:
        """Register interest in the reply to `xid`; call before sending the request."""
        future: Future[bytes] = Future()
        with self._lock:
            if not self._connected:
                future.set_exception(SwitchDisconnected(f"datapath {self.datapath_id:016x}"))
                return future
            self._pending[xid] = future
        return future

    def allow_silence(self, seconds: float) -> None:
        """We just asked the switch for work that keeps it from saying anything for
        up to `seconds` (committing a big bundle): liveness must not take that
        silence for a hung switch."""
        if self._allow_silence is not None:
            self._allow_silence(seconds)

    def send(self, data: bytes | bytearray) -> None:
        if not self._connected or not self._send(bytes(data)):
            raise SwitchDisconnected(f"datapath {self.datapath_id:016x} is gone")

    def barrier(self) -> Future[bytes]:
        """Send a barrier; the future resolves once the switch has processed (and
        answered, errors included) everything sent before it."""
        xid = self.next_xid()
        done = self.expect(xid)
        self.send(ofmsg.barrier_request(xid))
        return done

    def take_errors(self, xids: range) -> dict[int, OpenFlowError]:
        """Remove and return the unsolicited errors recorded for xids in `xids`."""
        with self._lock:
            found = {x: e for x, e in self._errors.items() if x in xids}
            for xid in found:
                del self._errors[xid]
        return found

    def set_change_listener(self, listener: Callable[[], None] | None) -> None:
        """Called (on os-ken's thread, so it must not block) whenever the flow monitor
        reports a change made by someone else."""
        self._on_change = listener

    def take_flow_updates(self) -> FlowUpdates:
        with self._lock:
            batch = FlowUpdates(tuple(self._updates), self._was_paused, self._overflowed)
            self._updates.clear()
            self._was_paused = self._paused
            self._overflowed = False
        return batch

    # ---- called from os-ken's threads ------------------------------------------------

    def on_flow_updates(self, body: bytes) -> None:
        """Notes pushed by the flow monitor; our own changes (abbreviated) are dropped."""
        changes = [u for u in ofmsg.parse_flow_updates(body) if u[0] != ofmsg.FLOW_UPDATE_ABBREV]
        if not changes:
            return
        with self._lock:
            if len(self._updates) + len(changes) > _MAX_KEPT_UPDATES:
                self._updates.clear()
                self._overflowed = True
            else:
                self._updates.extend(changes)
        self._notify_change()

    def on_monitor_paused(self) -> None:
        with self._lock:
            self._paused = self._was_paused = True
        self._notify_change()

    def on_monitor_resumed(self) -> None:
        with self._lock:
            self._paused = False
        self._notify_change()

    def _notify_change(self) -> None:
        listener = self._on_change
        if listener is not None:
            listener()

    def on_reply(self, xid: int, payload: bytes) -> None:
        with self._lock:
            future = self._pending.pop(xid, None)
        if future is not None and not future.done():
            future.set_result(payload)

    def on_multipart(self, xid: int, body: bytes, more: bool) -> None:
        """One part of a multipart reply; the future resolves with all bodies joined."""
        with self._lock:
            self._parts.setdefault(xid, []).append(body)
            if more:
                return
            whole = b"".join(self._parts.pop(xid))
            future = self._pending.pop(xid, None)
        if future is not None and not future.done():
            future.set_result(whole)

    def on_error(self, error: OpenFlowError) -> None:
        with self._lock:
            future = self._pending.pop(error.xid, None)
            self._parts.pop(error.xid, None)
            if future is None:
                if len(self._errors) >= _MAX_KEPT_ERRORS:
                    self._errors.pop(next(iter(self._errors)))
                self._errors[error.xid] = error
        if future is not None and not future.done():
            future.set_exception(error)

    def on_disconnect(self) -> None:
        with self._lock:
            self._connected = False
            pending = list(self._pending.values())
            self._pending.clear()
            self._parts.clear()
        for future in pending:
            if not future.done():
                future.set_exception(SwitchDisconnected(f"datapath {self.datapath_id:016x}"))
