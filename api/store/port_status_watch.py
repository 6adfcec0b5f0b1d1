"""Wakes every `?wait=active` long-poll from one watcher per process, not one poll per waiter.

Port statuses are written by the controller (`SqlStateStore.record_port_status`).
The write announces the ports it changed: on PostgreSQL with ``NOTIFY`` in the same
transaction (so every process sharing the database hears it, at commit), on
SQLite (one process) by calling `PortStatusWatch.port_status_changed` after commit.
The watcher then sets the events of those who wait on the changed ports (each reads
its port once woken, and answers or waits on). A slow safety re-check (one query for
all waited-on ports every `recheck_seconds`, waking those whose port is ACTIVE or gone)
makes sure a lost notification (listener reconnecting, database restarted) never
leaves a waiter stuck until its timeout.

Waiters are counted per key (the route uses the token's hash): beyond
`max_waiters_per_key` a new wait is refused with 429.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress

from sqlalchemy import select

from api.errors import ProblemError
from api.store.db import Database
from api.store.models import Port
from api.store.pg_listen import listen

log = logging.getLogger(__name__)

# The PostgreSQL channel status writes notify on; the payload is comma-separated port ids.
PORT_STATUS_CHANNEL = "ovs_fabric_port_status"
# NOTIFY payloads must stay under 8000 bytes: port ids are sent in chunks of this many.
NOTIFY_CHUNK = 150
# What a refused waiter is told to wait before retrying.
WAITERS_RETRY_AFTER_SECONDS = 5
# A waiter is woken when its port is in this status (or gone).
WAKE_STATUS = "ACTIVE"


class TooManyWaiters(ProblemError):
    status = 429


def notify_payloads(port_ids: Iterable[str]) -> list[str]:
    """`port_ids` as NOTIFY payloads, each well under PostgreSQL's 8000-byte limit."""
    ids = sorted(set(port_ids))
    return [",".join(ids[i : i + NOTIFY_CHUNK]) for i in range(0, len(ids), NOTIFY_CHUNK)]


class PortStatusWatch:
    """One per process: registers waiters, hears status changes, wakes the waiters."""

    def __init__(
        self,
        database: Database,
        *,
        max_waiters_per_key: int,
        recheck_seconds: float = 1.0,
    ) -> None:
        self.database = database
        self.max_waiters_per_key = max_waiters_per_key
        self.recheck_seconds = recheck_seconds
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._per_key: Counter[str] = Counter()
        # Filled from any thread (the controller's, the listener's); drained by _run.
        self._changed: set[str] = set()
        self._changed_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        self._full_recheck_due = False

    # ---- lifecycle (the app's lifespan) ---------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._stopping.clear()
        self._task = self._loop.create_task(self._run(), name="port-status-watch")
        if not self.database.is_sqlite:
            self._listener = threading.Thread(
                target=self._listen, name="port-status-listen", daemon=True
            )
            self._listener.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5.0)
            self._listener = None
        # Whoever still waits answers now (the route sees the service stopping).
        for events in self._waiters.values():
            for event in events:
                event.set()

    # ---- waiters (the event loop) -----------------------------------------------------

    @asynccontextmanager
    async def waiting(self, key: str, port_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when `port_id` may have become ACTIVE (or was deleted).

        Counts against `key`'s limit until the block is left, however it is left
        (answer, timeout, client gone, cancellation). Raises TooManyWaiters beyond it.
        """
        if self._per_key[key] >= self.max_waiters_per_key:
            raise TooManyWaiters(
                f"too many waiting requests for this token (limit {self.max_waiters_per_key})",
                headers={"Retry-After": str(WAITERS_RETRY_AFTER_SECONDS)},
            )
        self._per_key[key] += 1
        event = asyncio.Event()
        self._waiters.setdefault(port_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiters.get(port_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[port_id]
            self._per_key[key] -= 1
            if self._per_key[key] <= 0:
                del self._per_key[key]

    def waiter_count(self, key: str | None = None) -> int:
        """Waiters now registered (for `key`, or in all)."""
        if key is not None:
            return self._per_key.get(key, 0)
        return sum(len(events) for events in self._waiters.values())

    # ---- notifications (any thread) ---------------------------------------------------

    def port_status_changed(self, port_ids: Iterable[str]) -> None:
        """The statuses of `port_ids` were just committed; thread-safe."""
        with self._changed_lock:
            self._changed.update(port_ids)
        self._wake_watcher()

    def _recheck_all(self) -> None:
        with self._changed_lock:
            self._full_recheck_due = True
        self._wake_watcher()

    def _wake_watcher(self) -> None:
        loop, kick = self._loop, self._kick
        if loop is None or kick is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(kick.set)

    # ---- the watcher ------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._kick is not None
        next_full = time.monotonic() + self.recheck_seconds
        failing = False
        # NOTE: not `while True` ended by `stop`'s cancel alone: Python 3.11's
        # asyncio.wait_for swallows a cancellation that lands as its wait ends (the
        # kick or the timeout), and the app's shutdown then waited on this task
        # forever (a fresh-clone test run hung 300 s in a TestClient's shutdown).
        while not self._stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    self._kick.wait(), timeout=max(0.0, next_full - time.monotonic())
                )
            self._kick.clear()
            with self._changed_lock:
                changed, self._changed = self._changed, set()
                full, self._full_recheck_due = self._full_recheck_due, False
            if time.monotonic() >= next_full:
                full = True
                next_full = time.monotonic() + self.recheck_seconds
            waited = set(self._waiters)
            targets = waited if full else waited & changed
            if not targets:
                continue
            if not full:
                # Woken waiters read their port anyway (the route answers with it): a
                # query here first would only delay the answer by a thread hop and a
                # read. Ports that changed to something else than ACTIVE are rare
                # (a waiter's port is DOWN already) and cost their waiters one read.
                self._wake(targets)
                continue
            try:
                statuses = await asyncio.to_thread(self._read_statuses, targets)
            except Exception as exc:  # database unreachable: the next re-check retries
                if not failing:
                    log.warning("port status watch: cannot read statuses: %s", exc)
                failing = True
                continue
            failing = False
            # ACTIVE, or gone
            self._wake(p for p in targets if statuses.get(p, WAKE_STATUS) == WAKE_STATUS)

    def _wake(self, port_ids: Iterable[str]) -> None:
        for port_id in port_ids:
            for event in self._waiters.get(port_id, ()):
                event.set()

    def _read_statuses(self, port_ids: set[str]) -> dict[str, str]:
        """ONE query for the statuses of all of `port_ids`."""
        with self.database.read() as session:
            rows = session.execute(select(Port.id, Port.status).where(Port.id.in_(port_ids)))
            return {port_id: status for port_id, status in rows}

    def _listen(self) -> None:
        """PostgreSQL: LISTEN on a dedicated connection; reconnect when it drops."""
        listen(
            self.database,
            PORT_STATUS_CHANNEL,
            notified=lambda payload: self.port_status_changed(p for p in payload.split(",") if p),
            # Whatever changed before LISTEN took effect.
            connected=self._recheck_all,
            stopping=self._stopping,
        )
