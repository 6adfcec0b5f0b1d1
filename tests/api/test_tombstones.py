"""Tombstones of deleted rows are pruned after a retention, and an incremental loader left
behind the pruning horizon reads everything instead of resurrecting a deleted row.

Runs on SQLite and, when configured, PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from api.config import Settings
from api.store.db import Database
from api.store.models import DeletedRow, GlobalRevision, Network, Port, Tenant, utcnow
from api.store.snapshot import SqlStateStore
from api.store.snapshot_loader import IncrementalSnapshotLoader
from api.store.tombstones import prune_tombstones
from controller.core.model import SnapshotChange, snapshot_change
from tests.support.eventually import eventually

pytestmark = pytest.mark.api

HOUR = timedelta(hours=1)


class Ports:
    """Ports of one network, each created and deleted in its own write transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.count = 0
        with database.write() as session:
            tenant = Tenant(name="t")
            session.add(tenant)
            session.flush()
            network = Network(tenant_id=tenant.id, name="n", type="vlan", segmentation_id=10)
            session.add(network)
            session.flush()
            self.tenant_id, self.network_id = tenant.id, network.id

    def create(self) -> str:
        self.count += 1
        n = self.count
        with self.database.write() as session:
            port = Port(
                network_id=self.network_id,
                tenant_id=self.tenant_id,
                mac=f"02:00:00:00:00:{n:02x}",
            )
            session.add(port)
            session.flush()
            return port.id

    def delete(self, port_id: str) -> int:
        """Deletes the port; the revision of its tombstone."""
        with self.database.write() as session:
            session.delete(session.get_one(Port, port_id))
        return self.database.current_revision()


def tombstones(database: Database) -> list[tuple[str, int]]:
    with database.read() as session:
        rows = session.execute(
            select(DeletedRow.row_id, DeletedRow.revision).order_by(DeletedRow.revision)
        )
        return [(row_id, revision) for row_id, revision in rows]


def horizon(database: Database) -> int:
    with database.read() as session:
        return int(session.scalar(select(GlobalRevision.tombstones_pruned_through)) or 0)


def age(database: Database, *, through_revision: int, by: timedelta) -> None:
    """Make the tombstones at or below `through_revision` look written `by` ago."""
    with database.unversioned_write() as session:
        session.execute(
            update(DeletedRow)
            .where(DeletedRow.revision <= through_revision)
            .values(deleted_at=utcnow() - by)
        )


def as_set(change: SnapshotChange) -> set[object]:
    return {*change.hosts, *change.networks, *change.ports, *change.load_balancers}


def test_pruning_deletes_only_the_tombstones_older_than_the_retention(database: Database) -> None:
    ports = Ports(database)
    ids = [ports.create() for _ in range(5)]
    revisions = [ports.delete(port_id) for port_id in ids[:4]]
    age(database, through_revision=revisions[1], by=2 * HOUR)  # two old, two young

    result = prune_tombstones(database, older_than=HOUR)

    assert (result.deleted, result.pruned_through) == (2, revisions[1])
    assert tombstones(database) == [(ids[2], revisions[2]), (ids[3], revisions[3])]
    assert horizon(database) == revisions[1]
    # Nothing old left: nothing deleted, and the horizon never goes back.
    again = prune_tombstones(database, older_than=HOUR)
    assert (again.deleted, again.pruned_through) == (0, revisions[1])
    # Pruning changes no desired state: no revision bump.
    assert database.current_revision() == revisions[3]


def test_a_loader_behind_the_horizon_reads_everything_and_resurrects_nothing(
    database: Database,
) -> None:
    ports = Ports(database)
    kept, doomed, also_doomed = ports.create(), ports.create(), ports.create()
    loader = IncrementalSnapshotLoader(database)
    first = loader.load()
    assert first is not None and loader.full_loads == 1
    # While the loader does not read: two deletions, a new port, and their tombstones
    # pruned (a replica partitioned from the database for longer than the retention).
    ports.delete(doomed)
    last = ports.delete(also_doomed)
    added = ports.create()
    assert prune_tombstones(database, older_than=timedelta(0), now=utcnow() + HOUR).deleted == 2
    assert horizon(database) == last > first.snapshot.revision

    update_ = loader.load()

    assert update_ is not None and update_.change is not None
    assert loader.full_loads == 2
    fresh = SqlStateStore(database).load_snapshot()
    assert update_.snapshot == fresh
    assert {port.id for port in update_.snapshot.ports} == {kept, added}
    # The change still names exactly what differs: the two deletions and the new port.
    assert as_set(update_.change) == as_set(snapshot_change(first.snapshot, fresh))
    assert len(update_.change.ports) == 3


def test_a_loader_ahead_of_the_horizon_stays_incremental(database: Database) -> None:
    ports = Ports(database)
    ids = [ports.create() for _ in range(4)]
    pruned = ports.delete(ids[0])
    loader = IncrementalSnapshotLoader(database)
    first = loader.load()
    assert first is not None and loader.full_loads == 1
    later = ports.delete(ids[1])  # after the loader's read: its tombstone must stay
    age(database, through_revision=pruned, by=2 * HOUR)
    assert prune_tombstones(database, older_than=HOUR).pruned_through == pruned
    assert tombstones(database) == [(ids[1], later)]

    update_ = loader.load()

    assert update_ is not None and update_.change is not None
    assert loader.full_loads == 1  # incremental: the loader had read past the horizon
    assert update_.snapshot == SqlStateStore(database).load_snapshot()
    assert {port.id for port in update_.snapshot.ports} == set(ids[2:])
    assert [(before.id, after) for before, after in update_.change.ports] == [(ids[1], None)]


def test_the_service_prunes_by_itself(
    api_settings_factory: Callable[..., Settings], api_factory: Callable[[Settings], Any]
) -> None:
    settings = api_settings_factory(tombstone_retention=0.5)  # pruned every 0.05 s
    api = api_factory(settings)
    _tenant, caller = api.tenant("t")
    network = caller.create("/networks", {"name": "n", "type": "vlan", "cidr": "10.0.0.0/24"})
    port = caller.create("/ports", {"network_id": network["id"]})
    assert caller.delete(f"/ports/{port['id']}").status_code == 204
    revision = caller.revision()
    database = Database(settings.database_url)
    try:
        eventually(lambda: not tombstones(database), "the tombstone pruned")
        assert horizon(database) == revision
    finally:
        database.dispose()
