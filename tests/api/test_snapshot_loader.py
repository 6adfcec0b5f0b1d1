"""The incremental snapshot loader gives exactly what a full load gives, after any change.

A seeded random walk of writes through the ORM (the way the API writes: one
`Database.write()` per change) creates, changes and deletes hosts, networks, ports
(their addresses changed in place too), load balancers (a backend's weight changed in
place), and records health verdicts. After every step the incremental loader's
snapshot must equal a fresh full load, its change must list exactly the records that
differ, and every record that did not change must be the previous snapshot's object.
Runs on SQLite and, when configured, PostgreSQL.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from api.store.db import Database
from api.store.models import Host, LbBackend, LoadBalancer, Network, Port, PortIp, Tenant
from api.store.snapshot import SqlStateStore
from api.store.snapshot_loader import IncrementalSnapshotLoader
from controller.core.model import BackendHealthUpdate, Snapshot, SnapshotChange, snapshot_change

pytestmark = pytest.mark.api


class Writer:
    """Random desired-state writes, one transaction each."""

    def __init__(self, database: Database, rng: random.Random) -> None:
        self.database = database
        self.rng = rng
        self.counter = 0
        with database.write() as session:
            tenant = Tenant(name="t")
            session.add(tenant)
            session.flush()
            self.tenant_id = tenant.id

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def step(self) -> str:
        rng = self.rng
        kind = rng.choice(
            [
                *("host", "network", "port", "port", "port", "rebind", "ips", "ip-in-place"),
                *("drop-port", "lb", "weight", "drop-lb", "drop-network", "drop-host"),
                "host-change",
            ]
        )
        with self.database.write() as session:
            hosts = list(session.scalars(select(Host)))
            networks = list(session.scalars(select(Network)))
            ports = list(session.scalars(select(Port)))
            lbs = list(session.scalars(select(LoadBalancer)))
            n = self._next()
            if kind == "host" or not hosts:
                session.add(
                    Host(name=f"h{n}", ovsdb_remote=f"unix:/h{n}", tunnel_ip=f"192.0.2.{n}")
                )
                return "host"
            if kind == "host-change":
                rng.choice(hosts).uplink = f"up{n % 3}"
                return kind
            if kind == "network" or not networks:
                session.add(
                    Network(tenant_id=self.tenant_id, name=f"n{n}", type="vlan", segmentation_id=n)
                )
                return "network"
            network = rng.choice(networks)
            if kind == "port" or not ports:
                host = rng.choice([*hosts, None])
                session.add(
                    Port(
                        network_id=network.id,
                        tenant_id=self.tenant_id,
                        mac=f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}",
                        host_id=None if host is None else host.id,
                        interface=None if host is None else f"tap{n}",
                        addresses=[PortIp(ip=f"10.{n >> 8}.{n & 0xFF}.1", network_id=network.id)],
                    )
                )
                return "port"
            port = rng.choice(ports)
            if kind == "rebind":
                host = rng.choice(hosts)
                port.host_id, port.interface = host.id, f"tap{n}"
            elif kind == "ips":  # the collection replaced
                port.addresses = [
                    PortIp(ip=f"10.{n >> 8}.{n & 0xFF}.{i}", network_id=port.network_id, position=i)
                    for i in range(1, rng.randrange(1, 4))
                ]
            elif kind == "ip-in-place" and port.addresses:  # only the child row changes
                port.addresses[0].ip = f"10.{n >> 8}.{n & 0xFF}.9"
            elif kind == "drop-port":
                session.delete(port)
            elif kind == "lb" or not lbs:
                session.add(
                    LoadBalancer(
                        tenant_id=self.tenant_id,
                        network_id=network.id,
                        name=f"lb{n}",
                        vip=f"10.200.{n >> 8}.{n & 0xFF}",
                        protocol="tcp",
                        port=80,
                        backends=[
                            LbBackend(ip=f"10.9.0.{i}", port=80, weight=1, position=i)
                            for i in range(rng.randrange(1, 3))
                        ],
                    )
                )
                return "lb"
            elif kind == "weight" and lbs[0].backends:
                lb = rng.choice(lbs)
                if lb.backends:
                    lb.backends[0].weight = 1 + n % 50
            elif kind == "drop-lb":
                session.delete(rng.choice(lbs))
            elif kind == "drop-network":
                used = {p.network_id for p in ports} | {lb.network_id for lb in lbs}
                for candidate in networks:
                    if candidate.id not in used:
                        session.delete(candidate)
                        break
            elif kind == "drop-host":
                used_hosts = {p.host_id for p in ports}
                for candidate in hosts:
                    if candidate.id not in used_hosts:
                        session.delete(candidate)
                        break
        return kind


def as_set(change: SnapshotChange) -> set[object]:
    return {
        *change.hosts,
        *change.networks,
        *change.ports,
        *change.load_balancers,
    }


def shared_unchanged(before: Snapshot, after: Snapshot, change: SnapshotChange) -> bool:
    changed = {
        id(spec)
        for pairs in (change.hosts, change.networks, change.ports, change.load_balancers)
        for pair in pairs
        for spec in pair
    }
    old = {
        id(spec)
        for specs in (before.hosts, before.networks, before.ports, before.load_balancers)
        for spec in specs
    }
    return all(
        id(spec) in old or id(spec) in changed
        for specs in (after.hosts, after.networks, after.ports, after.load_balancers)
        for spec in specs
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_load_equals_a_full_load_after_every_change(
    database: Database, seed: int
) -> None:
    store = SqlStateStore(database)
    writer = Writer(database, random.Random(seed))
    loader = IncrementalSnapshotLoader(database)
    first = loader.load()
    assert first is not None and first.change is None  # the first load: everything
    previous = first.snapshot
    assert loader.load() is None  # nothing changed
    kinds: set[str] = set()
    for step in range(70):
        kinds.add(writer.step())
        if step % 9 == 4:  # a health verdict: no revision, still a change
            with database.read() as session:
                backend = session.execute(select(LbBackend)).scalars().first()
                target = None if backend is None else (backend.load_balancer_id, backend.ip)
            if target is not None:
                store.record_backend_health(
                    [
                        BackendHealthUpdate(
                            target[0], target[1], 80, healthy=step % 2 == 0, at=datetime.now(UTC)
                        )
                    ]
                )
        update = loader.load()
        full = store.load_snapshot()
        if update is None:  # e.g. a deletion that found nothing to delete
            assert full == previous
            continue
        assert update.snapshot == full
        assert update.change is not None
        assert as_set(update.change) == as_set(snapshot_change(previous, full))
        assert shared_unchanged(previous, update.snapshot, update.change)
        previous = update.snapshot
    # The walk went through every kind of change, deletions included.
    assert {"drop-port", "drop-lb", "ips", "ip-in-place", "weight", "rebind"} <= kinds
    assert previous.ports and previous.networks and previous.hosts


def test_a_resync_reports_only_what_differs(database: Database) -> None:
    writer = Writer(database, random.Random(3))
    for _ in range(15):
        writer.step()
    loader = IncrementalSnapshotLoader(database)
    first = loader.load()
    assert first is not None
    resync = loader.load(full=True)
    assert resync is not None and resync.change is not None
    assert not resync.change  # read again, nothing differs
    assert resync.snapshot.ports == first.snapshot.ports
    assert all(a is b for a, b in zip(resync.snapshot.ports, first.snapshot.ports, strict=True))
