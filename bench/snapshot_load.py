"""What the controller reads from SQL per change: the incremental load vs a full load,
and which hosts it then wakes.

    .venv/bin/python -m bench.snapshot_load --networks 4000 --ports-per-network 10 \
        --hosts 8 --hosts-per-network 2 [--database-url URL]

No root. The synthetic topology of bench/scale.py (N networks x P ports, a load
balancer in every 50th network), each network's ports spread over K of the H hosts,
is written to a fresh database (SQLite in a temporary directory unless --database-url
names an empty PostgreSQL database). Each repeat changes one port through the API's
write path (`Database.write`, one more address: the revision bump, the stamping) and
then measures, CPU time of this process:
- incremental: `IncrementalSnapshotLoader.load()` after that one change;
- peer: a full load of the same database (what the controller did on every revision);
- the hosts woken: `DependencyIndex.affected_hosts` of the loaded change (K of H).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import insert, update

from api.store.db import Database, upgrade_database
from api.store.models import (
    GlobalRevision,
    Host,
    LbBackend,
    LoadBalancer,
    Network,
    Port,
    PortIp,
    Tenant,
)
from api.store.snapshot_loader import IncrementalSnapshotLoader
from bench.report import Figure, measured
from bench.scale import build_snapshot
from controller.core.model import Snapshot
from controller.core.pipeline.affected import EVERY_HOST, DependencyIndex

_T = TypeVar("_T")
TENANT = "00000000-0000-4000-8000-00000000000t"


def populate(database: Database, snapshot: Snapshot) -> None:
    """Write `snapshot` as rows (Core inserts, revision 1), oldest first in its order."""
    start = datetime.now(UTC) - timedelta(days=1)
    stamp = iter(start + timedelta(microseconds=i) for i in range(10**9))
    with database.engine.begin() as connection:
        connection.execute(update(GlobalRevision).values(value=1))
        connection.execute(
            insert(Tenant),
            [{"id": TENANT, "name": "bench", "created_at": start, "updated_at": start}],
        )

        def rows(specs: list[dict[str, object]]) -> list[dict[str, object]]:
            for row in specs:
                moment = next(stamp)
                row.update(created_at=moment, updated_at=moment, revision=1)
            return specs

        connection.execute(
            insert(Host),
            rows(
                [
                    {"id": h.id, "name": h.name, "ovsdb_remote": h.ovsdb_remote,
                     "tunnel_ip": h.tunnel_ip, "uplink": h.uplink}
                    for h in snapshot.hosts
                ]
            ),
        )  # fmt: skip
        connection.execute(
            insert(Network),
            rows(
                [
                    {"id": n.id, "tenant_id": TENANT, "name": n.name, "type": n.type,
                     "segmentation_id": n.segmentation_id, "cidr": n.cidr}
                    for n in snapshot.networks
                ]
            ),
        )  # fmt: skip
        connection.execute(
            insert(Port),
            rows(
                [
                    {"id": p.id, "network_id": p.network_id, "tenant_id": TENANT, "mac": p.mac,
                     "host_id": p.host_id, "interface": p.interface}
                    for p in snapshot.ports
                ]
            ),
        )  # fmt: skip
        connection.execute(
            insert(PortIp),
            [
                {"port_id": p.id, "ip": ip, "network_id": p.network_id, "position": i}
                for p in snapshot.ports
                for i, ip in enumerate(p.ips)
            ],
        )
        connection.execute(
            insert(LoadBalancer),
            rows(
                [
                    {"id": lb.id, "tenant_id": TENANT, "network_id": lb.network_id,
                     "name": lb.id, "vip": lb.vip, "protocol": lb.protocol, "port": lb.port}
                    for lb in snapshot.load_balancers
                ]
            ),
        )  # fmt: skip
        connection.execute(
            insert(LbBackend),
            [
                {"load_balancer_id": lb.id, "ip": b.ip, "port": b.port, "weight": b.weight,
                 "position": i}
                for lb in snapshot.load_balancers
                for i, b in enumerate(lb.backends)
            ],
        )  # fmt: skip


def cpu_ms(fn: Callable[[], _T]) -> tuple[float, _T]:
    start = time.process_time()
    result = fn()
    return (time.process_time() - start) * 1000, result


def measure(
    networks: int,
    ports_per_network: int,
    hosts: int,
    hosts_per_network: int,
    repeats: int,
    database_url: str | None,
) -> dict[str, list[float]]:
    snapshot = build_snapshot(networks, ports_per_network, hosts, hosts_per_network)
    with tempfile.TemporaryDirectory(prefix="ofab-bench-load-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'fabric.db'}"
        upgrade_database(url)
        database = Database(url)
        try:
            populate(database, snapshot)
            loader = IncrementalSnapshotLoader(database)
            first = loader.load()
            assert first is not None and first.snapshot.ports == snapshot.ports
            index = DependencyIndex()
            index.reset(first.snapshot)
            figures: dict[str, list[float]] = {"incremental": [], "full": [], "woken": []}
            figures["index_us"] = []
            port = snapshot.ports[len(snapshot.ports) // 2]
            for i in range(repeats):
                with database.write() as session:  # the API's write path
                    row = session.get(Port, port.id)
                    assert row is not None
                    if i % 2 == 0:
                        row.addresses.append(
                            PortIp(ip="10.0.250.250", network_id=port.network_id, position=1)
                        )
                    else:
                        row.addresses = row.addresses[:1]
                ms, update_ = cpu_ms(loader.load)
                assert update_ is not None and update_.change is not None
                figures["incremental"].append(ms)
                start = time.process_time()
                affected = index.affected_hosts(update_.change)
                figures["index_us"].append((time.process_time() - start) * 1e6)
                figures["woken"].append(hosts if affected is EVERY_HOST else len(affected))
                ms, full = cpu_ms(lambda: IncrementalSnapshotLoader(database).load())
                figures["full"].append(ms)
                assert full is not None and full.snapshot == update_.snapshot
            return figures
        finally:
            database.dispose()


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py)."""
    networks = 1000 if quick else 4000
    hosts, spread = 8, 2
    result = measure(networks, 10, hosts, spread, 3 if quick else 5, None)
    shape = f"{networks:,} networks x 10 ports, SQLite"
    return [
        measured(
            f"load after one port change, {shape}",
            "ms CPU",
            result["incremental"],
            peer="full snapshot load of the same database",
            peer_values=result["full"],
            goal="O(change), not O(topology)",
        ),
        measured(
            f"hosts woken by one port change ({hosts} hosts, each network on {spread})",
            "hosts",
            result["woken"],
            goal=f"only the {spread} hosts of the network",
            met=max(result["woken"]) <= spread,
            notes=f"DependencyIndex: {statistics.median(result['index_us']):.0f} µs per change",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--networks", type=int, default=4000)
    parser.add_argument("--ports-per-network", type=int, default=10)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--hosts-per-network", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    result = measure(
        args.networks,
        args.ports_per_network,
        args.hosts,
        args.hosts_per_network,
        args.repeats,
        args.database_url,
    )
    inc, full = statistics.median(result["incremental"]), statistics.median(result["full"])
    print(
        f"incremental load after one port change: {inc:.2f} ms CPU "
        f"(spread {min(result['incremental']):.2f}-{max(result['incremental']):.2f})"
    )
    print(
        f"full load (peer): {full:.1f} ms CPU "
        f"(spread {min(result['full']):.1f}-{max(result['full']):.1f}); ratio {inc / full:.4f}x"
    )
    print(
        f"hosts woken: {statistics.median(result['woken']):.0f} of {args.hosts} "
        f"(DependencyIndex {statistics.median(result['index_us']):.0f} µs)"
    )
    print(f"incremental_load_ms={inc:.2f} full_load_ms={full:.1f}")


if __name__ == "__main__":
    main()
