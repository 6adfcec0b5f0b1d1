"""The controller's watcher is woken by commits, not by its (here hour-long) safety poll.

On SQLite the service is one process: a commit through its `Database` calls the
watcher at once. On PostgreSQL the commit is written through ANOTHER `Database`
(another engine and pool, as another API replica would), so only NOTIFY can wake it.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from api.store.db import Database, upgrade_database
from api.store.models import Host, Tenant
from api.store.snapshot import SqlStateStore
from controller.core.model import BackendHealthUpdate, SnapshotUpdate
from controller.host_agent import ControllerConfig
from controller.service import DesiredStateWatcher

pytestmark = pytest.mark.api

NEVER = 3600.0  # the safety poll: never within a test
WITHIN = 20.0  # generous: a loaded machine


@pytest.fixture
def databases(api_database_url: str) -> Iterator[tuple[Database, Database]]:
    """The watcher's database, and the one the writes go through."""
    upgrade_database(api_database_url)
    watched = Database(api_database_url)
    writer = watched if watched.is_sqlite else Database(api_database_url)
    try:
        yield watched, writer
    finally:
        watched.dispose()
        writer.dispose()


def test_a_commit_wakes_the_watcher_with_what_changed(
    databases: tuple[Database, Database],
) -> None:
    watched, writer = databases
    updates: queue.Queue[SnapshotUpdate] = queue.Queue()
    config = ControllerConfig(safety_poll_interval=NEVER, snapshot_resync_interval=NEVER)
    watcher = DesiredStateWatcher(SqlStateStore(watched), config, on_update=updates.put)
    watcher.start()
    try:
        first = updates.get(timeout=WITHIN)
        assert first.change is None and first.snapshot.hosts == ()
        for name in ("h1", "h2"):
            with writer.write() as session:
                session.add(Tenant(name=f"t-{name}"))
                session.add(Host(name=name, ovsdb_remote=f"unix:/{name}"))
            update = updates.get(timeout=WITHIN)
            assert update.change is not None
            assert [after.name for _, after in update.change.hosts if after] == [name]
            assert update.change.ports == update.change.networks == ()
    finally:
        watcher.stop()


def test_a_health_verdict_is_announced_too(databases: tuple[Database, Database]) -> None:
    watched, writer = databases
    woken: queue.Queue[None] = queue.Queue()
    stop = SqlStateStore(watched).watch_changes(lambda: woken.put(None))
    try:
        if not watched.is_sqlite:
            woken.get(timeout=WITHIN)  # the listener connected (it re-checks then)
        SqlStateStore(writer).record_backend_health(
            [BackendHealthUpdate("lb", "10.0.0.1", 80, healthy=False, at=datetime.now(UTC))]
        )
        woken.get(timeout=WITHIN)
    finally:
        stop()
