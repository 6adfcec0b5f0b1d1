"""`controller.core.mastership.MastershipStore` on PostgreSQL advisory locks.

Each controller replica keeps one dedicated connection (autocommit) for the
whole of its life and holds session-level advisory locks on it: its own replica
key (membership) and one key per switch it masters. Nothing has to expire: when
the process dies, even by SIGKILL, its socket closes and PostgreSQL frees every
lock at once, so the survivors see the switches unmastered on their next poll.
Live replicas and mastered switches are read from `pg_locks`.

The generation of a switch is incremented by the same single statement that
records its new master (an upsert into `switch_masters`), after the lock is
taken: two masters of one switch can never hold the same generation, and the
switch refuses the older one's role request as stale.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import Connection, text

from api.store.db import Database
from controller.core.mastership import MastershipView, ReplicaInfo, advisory_key

log = logging.getLogger(__name__)

# First key of the two-key advisory locks ("OF" + kind), so ours never collide
# with another application's on the same database.
REPLICA_LOCK_CLASS = 0x4F460001
SWITCH_LOCK_CLASS = 0x4F460002


class ReplicasNeedPostgres(Exception):
    def __init__(self) -> None:
        super().__init__("controller replicas need PostgreSQL")


class PgMastership:
    def __init__(self, database: Database, replica: ReplicaInfo) -> None:
        if database.engine.dialect.name != "postgresql":
            raise ReplicasNeedPostgres()
        self._database = database
        self._replica = replica
        self._connection: Connection | None = None
        self._held: set[str] = set()

    @property
    def replica(self) -> ReplicaInfo:
        return self._replica

    def _conn(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("join() first")
        return self._connection

    def join(self, replica: ReplicaInfo) -> None:
        if self._connection is not None:
            return
        self._replica = replica
        connection = self._database.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            connection.execute(
                text("SELECT pg_advisory_lock(CAST(:c AS integer), CAST(:k AS integer))"),
                {"c": REPLICA_LOCK_CLASS, "k": advisory_key(replica.id)},
            )
            connection.execute(
                text(
                    "INSERT INTO controller_replicas (id, relay_socket, network_target, started_at)"
                    " VALUES (:id, :relay, :target, now())"
                    " ON CONFLICT (id) DO UPDATE SET relay_socket = :relay,"
                    " network_target = :target, started_at = now()"
                ),
                {"id": replica.id, "relay": replica.relay_socket, "target": replica.network_target},
            )
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        self._connection = connection
        self._held.clear()
        # Rows of replicas that died are swept here, by whoever joins next.
        live = {r.id for r in self._live_replicas()}
        for stale in self._registered_ids() - live:
            connection.execute(
                text("DELETE FROM controller_replicas WHERE id = :id"), {"id": stale}
            )

    def _registered_ids(self) -> set[str]:
        rows = self._conn().execute(text("SELECT id FROM controller_replicas")).all()
        return {row[0] for row in rows}

    def _held_locks(self, lock_class: int) -> set[int]:
        rows = (
            self._conn()
            .execute(
                text(
                    "SELECT objid::bigint FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND objsubid = 2"
                    " AND classid = CAST(CAST(:c AS bigint) AS oid)"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                ),
                {"c": lock_class},
            )
            .all()
        )
        # pg_locks shows the int4 key as an unsigned oid.
        return {v - (1 << 32) if v >= 1 << 31 else v for (v,) in rows}

    def _live_replicas(self) -> list[ReplicaInfo]:
        locked = self._held_locks(REPLICA_LOCK_CLASS)
        rows = (
            self._conn()
            .execute(text("SELECT id, relay_socket, network_target FROM controller_replicas"))
            .all()
        )
        return [
            ReplicaInfo(id=i, relay_socket=relay, network_target=target)
            for i, relay, target in rows
            if advisory_key(i) in locked
        ]

    def view(self, host_ids: Iterable[str]) -> MastershipView:
        replicas = tuple(sorted(self._live_replicas(), key=lambda r: r.id))
        locked = self._held_locks(SWITCH_LOCK_CLASS)
        mastered = frozenset(h for h in host_ids if advisory_key(h) in locked)
        return MastershipView(replicas=replicas, mastered=mastered)

    def try_acquire(self, host_id: str) -> int | None:
        conn = self._conn()
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(CAST(:c AS integer), CAST(:k AS integer))"),
            {"c": SWITCH_LOCK_CLASS, "k": advisory_key(host_id)},
        ).scalar_one()
        if not got:
            return None
        self._held.add(host_id)
        generation: int = conn.execute(
            text(
                "INSERT INTO switch_masters (host_id, replica_id, generation, since)"
                " VALUES (:h, :r, 1, now())"
                " ON CONFLICT (host_id) DO UPDATE SET replica_id = :r,"
                " generation = switch_masters.generation + 1, since = now()"
                " RETURNING generation"
            ),
            {"h": host_id, "r": self._replica.id},
        ).scalar_one()
        return generation

    def release(self, host_id: str) -> None:
        self._held.discard(host_id)
        self._conn().execute(
            text("SELECT pg_advisory_unlock(CAST(:c AS integer), CAST(:k AS integer))"),
            {"c": SWITCH_LOCK_CLASS, "k": advisory_key(host_id)},
        )

    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def leave(self) -> None:
        """Close the dedicated connection: PostgreSQL frees all our locks with it."""
        connection, self._connection = self._connection, None
        self._held.clear()
        if connection is None:
            return
        try:
            connection.execute(
                text("DELETE FROM controller_replicas WHERE id = :id"), {"id": self._replica.id}
            )
        except Exception:  # the database may be what failed; the locks go with the socket
            log.debug("unregistering replica %s failed", self._replica.id, exc_info=True)
        # Never back into the pool: a pooled connection would keep the locks.
        connection.invalidate()
        connection.close()
