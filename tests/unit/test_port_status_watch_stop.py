"""The port-status watcher ends once stopping, even if the cancel of `stop` is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from api.store.db import Database
from api.store.port_status_watch import PortStatusWatch

pytestmark = pytest.mark.unit


def test_the_watcher_ends_once_stopping_without_a_cancel(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'watch.db'}")

    async def stop_without_cancel() -> None:
        watch = PortStatusWatch(database, max_waiters_per_key=1, recheck_seconds=0.05)
        await watch.start()
        task = watch._task
        assert task is not None
        # What `stop` does before its cancel, which Python 3.11's wait_for may swallow.
        watch._stopping.set()
        await asyncio.wait_for(task, timeout=5)

    try:
        asyncio.run(stop_without_cancel())
    finally:
        database.dispose()
