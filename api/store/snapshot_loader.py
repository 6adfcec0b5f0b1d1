"""Loads the desired-state snapshot incrementally: rows changed since the last revision read.

The first load (and a resync) reads every row. Every later load reads, in one read
transaction, only the rows whose `revision` is newer than the one last read, the
tombstones of rows deleted since (`deleted_rows`), and the load balancers whose
backends got a health verdict since the newest one seen; it patches them into the
records it keeps and returns a new `Snapshot` that shares every unchanged record
object with the previous one (the pipeline's change detection then costs pointer
comparisons), together with the `SnapshotChange`.

Why "revision > last read" misses nothing: every write transaction bumps the single
revision row first and holds its lock until commit, so transactions commit in
revision order, and a read transaction (REPEATABLE READ on PostgreSQL) that sees
revision R sees every row stamped <= R and none stamped > R. A changed child row
(an address, a backend) stamps its parent (`api.store.db`). Health verdicts are
written without a revision: their `health_at` is followed like the change stamp
does. What neither follows (a Core UPDATE of desired state outside `Database.write`,
clock skew between replicas recording verdicts) is caught by the periodic resync.

Tombstones are pruned after a retention (`api.store.tombstones`), which records the
revision pruned through: a loader whose last revision is below it reads everything.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, RowMapping, func, or_, select
from sqlalchemy.orm import Session

from api.store.db import Database
from api.store.models import (
    DeletedRow,
    GlobalRevision,
    Host,
    LbBackend,
    LoadBalancer,
    Network,
    Port,
    PortIp,
    columns_for,
)
from controller.core.model import (
    BackendSpec,
    HealthCheckSpec,
    HostSpec,
    LoadBalancerSpec,
    NetworkSpec,
    PortSpec,
    Snapshot,
    SnapshotChange,
    SnapshotUpdate,
)

log = logging.getLogger(__name__)

_Spec = TypeVar("_Spec", HostSpec, NetworkSpec, PortSpec, LoadBalancerSpec)
_Key = tuple[datetime, str]  # (created_at, id): the snapshot's order, as a full load gives it

# hc_enabled, then hc_<field> for every field of HealthCheckSpec.
_HEALTH_CHECK_COLUMNS = (
    LoadBalancer.hc_enabled,
    *(getattr(LoadBalancer, f"hc_{field.name}") for field in fields(HealthCheckSpec)),
)


class _Records(Generic[_Spec]):
    """The records of one kind in snapshot order (created_at, id), patched in place."""

    def __init__(self) -> None:
        self._keys: list[_Key] = []
        self._specs: list[_Spec] = []
        self._key_of: dict[str, _Key] = {}

    def get(self, record_id: str) -> _Spec | None:
        key = self._key_of.get(record_id)
        return None if key is None else self._specs[bisect_left(self._keys, key)]

    def put(self, key: _Key, spec: _Spec) -> tuple[_Spec | None, _Spec | None] | None:
        """Insert or replace; the change, or None when an equal record is there already
        (which is kept, so the snapshots share it)."""
        old_key = self._key_of.get(spec.id)
        if old_key is not None:
            at = bisect_left(self._keys, old_key)
            before = self._specs[at]
            if before == spec:
                return None
            if old_key == key:
                self._specs[at] = spec
                return before, spec
            del self._keys[at], self._specs[at]
        else:
            before = None
        at = bisect_left(self._keys, key)
        self._keys.insert(at, key)
        self._specs.insert(at, spec)
        self._key_of[spec.id] = key
        return before, spec

    def drop(self, record_id: str) -> tuple[_Spec | None, _Spec | None] | None:
        key = self._key_of.pop(record_id, None)
        if key is None:
            return None
        at = bisect_left(self._keys, key)
        before = self._specs[at]
        del self._keys[at], self._specs[at]
        return before, None

    def fill(self, rows: Iterable[tuple[_Key, _Spec]]) -> None:
        """Load into an empty set (a first load: one sort, no insertion one by one)."""
        assert not self._keys
        ordered = sorted(rows, key=lambda row: row[0])
        self._keys = [key for key, _ in ordered]
        self._specs = [spec for _, spec in ordered]
        self._key_of = {spec.id: key for key, spec in ordered}

    def ids(self) -> list[str]:
        return list(self._key_of)

    def snapshot(self) -> tuple[_Spec, ...]:
        return tuple(self._specs)


class IncrementalSnapshotLoader:
    """One reader's loader (`controller.core.model.SnapshotLoader`): not thread-safe."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._revision: int | None = None  # None: nothing loaded yet
        self._health_at: datetime | None = None
        self._hosts: _Records[HostSpec] = _Records()
        self._networks: _Records[NetworkSpec] = _Records()
        self._ports: _Records[PortSpec] = _Records()
        self._lbs: _Records[LoadBalancerSpec] = _Records()
        self._snapshot: Snapshot | None = None
        self.full_loads = 0  # first load, resyncs, and loads behind the tombstone horizon

    def load(self, *, full: bool = False) -> SnapshotUpdate | None:
        with self.database.read() as session:
            revision, pruned_through = _revision_and_horizon(session)
            health_at = session.scalar(select(func.max(LbBackend.health_at)))
            first = self._revision is None
            # Tombstones of deletions this loader has not read may be gone: an incremental
            # load could keep a deleted row. It reads everything, as a resync does.
            behind = self._revision is not None and self._revision < pruned_through
            if behind and not full:
                log.info(
                    "tombstones pruned through revision %d, past the last one read (%s):"
                    " reading the whole desired state",
                    pruned_through,
                    self._revision,
                )
            if full or first or behind:
                self.full_loads += 1
                change = self._load_all(session)
            elif (revision, health_at) == (self._revision, self._health_at):
                return None
            else:
                change = self._load_since(session)
        self._revision, self._health_at = revision, health_at
        snapshot = Snapshot(
            revision=revision,
            hosts=self._hosts.snapshot(),
            networks=self._networks.snapshot(),
            ports=self._ports.snapshot(),
            load_balancers=self._lbs.snapshot(),
        )
        self._snapshot = snapshot
        return SnapshotUpdate(snapshot, None if first else change)

    # ---- reading ------------------------------------------------------------------------

    def _load_all(self, session: Session) -> SnapshotChange:
        hosts = _host_rows(session, None)
        networks = _network_rows(session, None)
        ports = _port_rows(session, None)
        lbs = _lb_rows(session, None)
        return SnapshotChange(
            hosts=_replace_all(self._hosts, hosts),
            networks=_replace_all(self._networks, networks),
            ports=_replace_all(self._ports, ports),
            load_balancers=_replace_all(self._lbs, lbs),
        )

    def _load_since(self, session: Session) -> SnapshotChange:
        since = self._revision
        assert since is not None
        deleted: dict[str, list[str]] = defaultdict(list)
        rows = session.execute(
            select(DeletedRow.kind, DeletedRow.row_id).where(DeletedRow.revision > since)
        )
        for kind, row_id in rows:
            deleted[kind].append(row_id)
        health_changed = (
            LbBackend.health_at.is_not(None)
            if self._health_at is None
            else LbBackend.health_at > self._health_at
        )
        lb_changed = or_(
            LoadBalancer.revision > since,
            LoadBalancer.id.in_(select(LbBackend.load_balancer_id).where(health_changed)),
        )
        return SnapshotChange(
            hosts=_patch(self._hosts, _host_rows(session, Host.revision > since), deleted["Host"]),
            networks=_patch(
                self._networks, _network_rows(session, Network.revision > since), deleted["Network"]
            ),
            ports=_patch(self._ports, _port_rows(session, Port.revision > since), deleted["Port"]),
            load_balancers=_patch(
                self._lbs, _lb_rows(session, lb_changed), deleted["LoadBalancer"]
            ),
        )


_Change = tuple[tuple[Any, Any], ...]


def _revision_and_horizon(session: Session) -> tuple[int, int]:
    """The global revision and the revision tombstones are pruned through (0, 0 without
    the revision row)."""
    row = session.execute(
        select(GlobalRevision.value, GlobalRevision.tombstones_pruned_through).where(
            GlobalRevision.id == 1
        )
    ).first()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _patch(
    records: _Records[_Spec], rows: Iterable[tuple[_Key, _Spec]], deleted: Sequence[str]
) -> _Change:
    changes: list[tuple[Any, Any]] = []
    present: set[str] = set()
    for key, spec in rows:
        present.add(spec.id)
        if (change := records.put(key, spec)) is not None:
            changes.append(change)
    for record_id in deleted:
        # A row deleted and created again since holds its (newer) row: it stays.
        if record_id not in present and (change := records.drop(record_id)) is not None:
            changes.append(change)
    return tuple(changes)


def _replace_all(records: _Records[_Spec], rows: Iterable[tuple[_Key, _Spec]]) -> _Change:
    rows = list(rows)
    if not records.ids():
        records.fill(rows)
        return tuple((None, spec) for _, spec in rows)
    gone = set(records.ids()) - {spec.id for _, spec in rows}
    return _patch(records, rows, sorted(gone))


# ---- rows to records ------------------------------------------------------------------


def _rows(
    session: Session, model: Any, record: type[Any], where: ColumnElement[bool] | None, *extra: Any
) -> list[RowMapping]:
    stmt = select(model.created_at, *columns_for(model, record), *extra)
    if where is not None:
        stmt = stmt.where(where)
    return list(session.execute(stmt).mappings())


def _keyed(
    rows: Iterable[RowMapping], make: Callable[[dict[str, Any]], _Spec]
) -> list[tuple[_Key, _Spec]]:
    keyed = []
    for row in rows:
        values = dict(row)
        created_at = values.pop("created_at")
        keyed.append(((created_at, values["id"]), make(values)))
    return keyed


def _host_rows(session: Session, where: ColumnElement[bool] | None) -> list[tuple[_Key, HostSpec]]:
    return _keyed(_rows(session, Host, HostSpec, where), lambda v: HostSpec(**v))


def _network_rows(
    session: Session, where: ColumnElement[bool] | None
) -> list[tuple[_Key, NetworkSpec]]:
    return _keyed(_rows(session, Network, NetworkSpec, where), lambda v: NetworkSpec(**v))


def _port_rows(session: Session, where: ColumnElement[bool] | None) -> list[tuple[_Key, PortSpec]]:
    rows = _rows(session, Port, PortSpec, where)
    ips_stmt = select(PortIp.port_id, PortIp.ip).order_by(PortIp.port_id, PortIp.position)
    if where is not None:
        ips_stmt = ips_stmt.where(PortIp.port_id.in_(select(Port.id).where(where)))
    ips: dict[str, list[str]] = defaultdict(list)
    for port_id, ip in session.execute(ips_stmt):
        ips[port_id].append(ip)
    return _keyed(rows, lambda v: PortSpec(**v, ips=tuple(ips.get(v["id"], ()))))


def _lb_rows(
    session: Session, where: ColumnElement[bool] | None
) -> list[tuple[_Key, LoadBalancerSpec]]:
    rows = _rows(session, LoadBalancer, LoadBalancerSpec, where, *_HEALTH_CHECK_COLUMNS)
    backends_stmt = select(
        LbBackend.load_balancer_id, *columns_for(LbBackend, BackendSpec)
    ).order_by(LbBackend.load_balancer_id, LbBackend.position)
    if where is not None:
        backends_stmt = backends_stmt.where(
            LbBackend.load_balancer_id.in_(select(LoadBalancer.id).where(where))
        )
    backends: dict[str, list[BackendSpec]] = defaultdict(list)
    for lb_id, *backend in session.execute(backends_stmt):
        backends[lb_id].append(BackendSpec(*backend))

    def make(values: dict[str, Any]) -> LoadBalancerSpec:
        check = None
        if values["hc_enabled"]:
            check = HealthCheckSpec(
                **{f.name: values[f"hc_{f.name}"] for f in fields(HealthCheckSpec)}
            )
        return LoadBalancerSpec(
            **{f.name: values[f.name] for f in fields(LoadBalancerSpec) if f.name in values},
            backends=tuple(backends.get(values["id"], ())),
            health_check=check,
        )

    return _keyed(rows, make)
