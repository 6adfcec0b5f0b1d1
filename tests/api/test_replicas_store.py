"""Mastership through PostgreSQL advisory locks (api.store.replicas) on a real server.

The property that matters most: a replica that dies by SIGKILL loses its
membership and its switches at once, with nothing to expire, and the next
master of a switch gets a higher generation (the OpenFlow fencing token).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from api.config import Settings
from api.store.db import Database, upgrade_database
from api.store.replicas import PgMastership, ReplicasNeedPostgres
from controller.core.mastership import ReplicaInfo
from controller.replication import ReplicaCoordinator
from tests.support.postgres import running_postgres

pytestmark = pytest.mark.api

HOST = "7a3c1a4e-0000-4000-8000-000000000001"

_HOLDER = """
import sys, time
from api.store.db import Database
from api.store.replicas import PgMastership
from controller.core.mastership import ReplicaInfo
from controller.replication import ReplicaCoordinator
replica = ReplicaInfo("doomed", "ofp-doomed.sock")
store = PgMastership(Database(sys.argv[1]), replica)
store.join(replica)
print(store.try_acquire(sys.argv[2]), flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("OVS_FABRIC_TEST_POSTGRES_URL")
    if given:
        upgrade_database(given)
        yield given
        return
    with running_postgres() as server:
        upgrade_database(server.url)
        yield server.url


def replica_store(url: str, name: str) -> PgMastership:
    replica = ReplicaInfo(name, f"ofp-{name}.sock", network_target=f"tcp:192.0.2.9:{len(name)}")
    store = PgMastership(Database(url), replica)
    store.join(replica)
    return store


def test_one_master_per_switch_and_a_killed_master_frees_it_at_once(postgres_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, postgres_url, HOST],
        stdout=subprocess.PIPE,
        text=True,
    )
    survivor = replica_store(postgres_url, "survivor")
    try:
        assert holder.stdout is not None
        first_generation = int(holder.stdout.readline())
        view = survivor.view([HOST])
        assert {r.id for r in view.replicas} == {"doomed", "survivor"}
        assert view.mastered == {HOST}
        assert survivor.try_acquire(HOST) is None  # exactly one master

        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        while HOST in survivor.view([HOST]).mastered:
            assert time.monotonic() - killed < 2, "the dead replica's lock outlived it"
            time.sleep(0.01)
        assert {r.id for r in survivor.view([HOST]).replicas} == {"survivor"}
        assert survivor.try_acquire(HOST) == first_generation + 1
        assert survivor.held() == {HOST}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        survivor.leave()


def test_release_hands_over_with_a_new_generation(postgres_url: str) -> None:
    a, b = replica_store(postgres_url, "a"), replica_store(postgres_url, "b")
    try:
        host = "7a3c1a4e-0000-4000-8000-000000000002"
        generation = a.try_acquire(host)
        assert generation is not None
        assert b.try_acquire(host) is None
        a.release(host)
        assert b.try_acquire(host) == generation + 1
        b.leave()  # closing the connection drops the lock and the registration
        c = replica_store(postgres_url, "c")
        assert c.try_acquire(host) == generation + 2
        assert {r.id for r in c.view([host]).replicas} == {"a", "c"}
        c.leave()
    finally:
        a.leave()
        b.leave()


def test_sqlite_refuses_replicas(tmp_path: object) -> None:
    database = Database("sqlite://")
    with pytest.raises(ReplicasNeedPostgres, match="controller replicas need PostgreSQL"):
        PgMastership(database, ReplicaInfo("x", "y"))
    for settings in ({"controller_replicas": True}, {"role": "controller"}, {"role": "api"}):
        with pytest.raises(ValueError, match="controller replicas need PostgreSQL"):
            Settings(database_url="sqlite:///x.db", **settings)


def test_a_lost_database_connection_demotes_everything_then_rejoins(postgres_url: str) -> None:
    """The coordinator cannot know whether it still holds a lock whose connection
    broke: it stops mastering at once, and takes the switch again (next generation)
    when the database answers."""
    host = "7a3c1a4e-0000-4000-8000-000000000003"
    roles: dict[str, int | None] = {}
    replica = ReplicaInfo("lonely", "ofp-lonely.sock")
    coordinator = ReplicaCoordinator(
        PgMastership(Database(postgres_url), replica),
        replica,
        host_ids=lambda: [host],
        on_master=lambda h, generation: roles.__setitem__(h, generation),
        on_slave=lambda h: roles.__setitem__(h, None),
        on_replicas=lambda _replicas: None,
    )
    coordinator.poll()
    first = roles[host]
    assert first is not None

    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
            )
        )
    admin.dispose()
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        coordinator.poll()
    coordinator._give_up_everything()  # what the coordinator's thread does on failure
    assert roles[host] is None

    coordinator.poll()  # joins again on a new connection
    assert roles[host] == first + 1
    coordinator.stop()
    assert roles[host] is None
