"""Wake-ups on commits: LISTEN on a PostgreSQL channel (reconnecting when it drops),
and `ChangeWatch`, which the controller uses instead of polling the revision.

`listen` serves every watcher that wakes on NOTIFY (port statuses, desired state).
The connection is psycopg's own, in autocommit, outside SQLAlchemy's pool: it stays
open for the life of the watcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from api.store.db import DESIRED_STATE_CHANNEL, Database

log = logging.getLogger(__name__)

# How often the listener looks at its stop flag while nothing is notified.
_POLL_SECONDS = 1.0


def listen(
    database: Database,
    channel: str,
    *,
    notified: Callable[[str], None],
    connected: Callable[[], None],
    stopping: threading.Event,
) -> None:
    """Until `stopping` is set: LISTEN on `channel`, call `notified(payload)` for every
    notification, and `connected()` after each (re)connection (whatever was notified
    while no connection listened is lost: the caller re-checks then)."""
    url = make_url(database.url).set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    failing = False
    while not stopping.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
                connection.execute(f"LISTEN {channel}")
                if failing:
                    log.info("listening on %s again", channel)
                failing = False
                connected()
                while not stopping.is_set():
                    for notify in connection.notifies(timeout=_POLL_SECONDS):
                        notified(notify.payload)
        except psycopg.Error as exc:
            if not failing:
                log.warning("LISTEN %s: connection lost: %s", channel, exc)
            failing = True
            stopping.wait(1.0)


class ChangeWatch:
    """Calls `changed` (from another thread) soon after desired state or a health verdict
    is committed: at once for commits of this process (any backend), and on PostgreSQL
    for every process's commits through NOTIFY on `DESIRED_STATE_CHANNEL`."""

    def __init__(self, database: Database, changed: Callable[[], None]) -> None:
        self._database = database
        self._changed = changed
        self._channel = DESIRED_STATE_CHANNEL
        self._stopping = threading.Event()
        self._remove: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._remove = self._database.add_change_listener(self._changed)
        if not self._database.is_sqlite:
            self._thread = threading.Thread(
                target=listen,
                args=(self._database, self._channel),
                kwargs={
                    "notified": lambda _payload: self._changed(),
                    "connected": self._changed,
                    "stopping": self._stopping,
                },
                name="desired-state-listen",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
