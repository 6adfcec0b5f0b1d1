"""Pruning the tombstones of deleted desired-state rows (`deleted_rows`).

Every deletion of a desired-state row leaves a tombstone, so that an incremental
reader (`api.store.snapshot_loader`) learns about it. Tombstones older than the
retention are deleted here, and the highest revision pruned is recorded as the
horizon (`fabric_revision.tombstones_pruned_through`) in the same transaction. A
reader whose last revision is below the horizon may have missed a deletion: it
reads everything again instead (the path it takes for its periodic resync). A
reader that keeps up (every controller replica reads within its safety poll, 1 s)
is never behind a horizon an hour old; one that is (a replica partitioned from the
database for longer than the retention) pays one full load.

Safe with several processes pruning at once: the horizon only grows (the greater of
the stored and the new one), and only tombstones at or below it are deleted, in the
transaction that raises it, so a reader's snapshot sees both or neither.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, case, delete, func, select, update

from api.store.db import Database
from api.store.models import DeletedRow, GlobalRevision, utcnow

log = logging.getLogger(__name__)

_REVISION_ROW = GlobalRevision.id == 1


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    pruned_through: int  # the horizon after this prune


def prune_tombstones(
    database: Database, *, older_than: timedelta, now: datetime | None = None
) -> PruneResult:
    """Delete the tombstones written more than `older_than` ago; raise the horizon to the
    highest revision deleted."""
    cutoff = (now or utcnow()) - older_than
    # Not Database.write(): pruning changes no desired state, so no revision bump and no
    # wake-up of the controllers. The UPDATE of the revision row below takes its lock
    # (PostgreSQL; SQLite's write lock is taken at BEGIN), so a prune waits for a write
    # in flight, whose tombstones it cannot see yet and does not touch.
    with database.unversioned_write() as session:
        through = session.scalar(
            select(func.max(DeletedRow.revision)).where(DeletedRow.deleted_at < cutoff)
        )
        if through is None:
            horizon = session.scalar(
                select(GlobalRevision.tombstones_pruned_through).where(_REVISION_ROW)
            )
            return PruneResult(0, int(horizon or 0))
        stored = GlobalRevision.tombstones_pruned_through
        session.execute(
            update(GlobalRevision)
            .where(_REVISION_ROW)
            .values(tombstones_pruned_through=case((stored < through, through), else_=stored))
        )
        # Bounded by revision too: a tombstone committed meanwhile with an older clock
        # (another replica's) but a revision above the horizon must stay.
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            delete(DeletedRow).where(DeletedRow.deleted_at < cutoff, DeletedRow.revision <= through)
        )
        horizon = session.scalar(
            select(GlobalRevision.tombstones_pruned_through).where(_REVISION_ROW)
        )
        return PruneResult(int(result.rowcount), int(horizon or 0))


class TombstonePruner:
    """Prunes every `interval` seconds on its own thread; a failure is logged and retried
    at the next interval (tombstones only wait longer)."""

    def __init__(self, database: Database, *, retention: float, interval: float) -> None:
        self._database = database
        self._retention = timedelta(seconds=retention)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tombstone-prune", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval):
            try:
                result = prune_tombstones(self._database, older_than=self._retention)
            except Exception:  # a database outage must not end the pruner
                if not failing:
                    log.exception(
                        "pruning tombstones failed; retrying every %.0f s", self._interval
                    )
                failing = True
                continue
            failing = False
            if result.deleted:
                log.info(
                    "pruned %d tombstone(s) through revision %d",
                    result.deleted,
                    result.pruned_through,
                )


def prune_interval(retention: float) -> float:
    """How often to prune for a retention: a tenth of it (a tombstone lives at most 1.1x
    the retention), at most every 5 minutes."""
    return min(retention / 10, 300.0)


def start_tombstone_pruner(database: Database, *, retention: float) -> TombstonePruner:
    pruner = TombstonePruner(database, retention=retention, interval=prune_interval(retention))
    pruner.start()
    return pruner
