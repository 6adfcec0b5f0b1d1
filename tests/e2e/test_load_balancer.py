"""L4 load balancers proven with real TCP connections between namespaced VMs.

Backends are tiny TCP servers in VM namespaces that answer every line with
their own name, so a client sees which backend served each message of a
connection. The service runs as a child process; health checks are real
probes sent by the service from the VIP through OpenFlow packet-out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from api.client import ApiError, FabricClient
from api.store.db import Database
from api.store.principals import CLI, create_token
from tests.support.eventually import eventually
from tests.support.fabric import Fabric
from tests.support.load_balancer import (
    BACKEND_PORT,
    VIP,
    Servers,
    build,
    connect,
    start_connect,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as found:
        yield found


def test_weighted_split_pinning_and_hairpin(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    outcome = connect(lab.vms["c"], 400, messages=4)
    counts = outcome.counts()
    print("split over 400 connections:", counts)
    assert outcome.errors == [], outcome.errors
    assert counts.get("", 0) == 0, counts
    assert outcome.mixed == 0, "a connection changed backend"
    shares = {name: counts.get(name, 0) / 400 for name in ("b1", "b2", "b3")}
    expected = {"b1": 0.25, "b2": 0.25, "b3": 0.5}
    for name, share in shares.items():
        assert abs(share - expected[name]) <= 0.10, (shares, counts)
    # b1 sits on the client's host: its connections were hairpinned there.
    assert counts["b1"] > 0


def test_other_tenant_cannot_reach_or_resolve_the_vip(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    other = fabric.client.create("tenants", name="intruder")["id"]
    # Same addresses, other tenant's network, on the very host of the client.
    their_net = fabric.network(other, "copy", "vxlan", "10.5.0.0/24")
    intruder = fabric.add_vm("h1", their_net, "x", "10.5.0.10")
    outcome = connect(intruder, 2, messages=1)
    assert outcome.served == ["", ""], outcome
    neighbour = intruder.run("ip", "neigh", "show", VIP, check=False).stdout
    assert "lladdr" not in neighbour, neighbour
    # Nor can it create a load balancer on a network it does not own.
    scoped = _tenant_client(fabric, other)
    with scoped, pytest.raises(ApiError) as err:
        scoped.create(
            "load-balancers",
            network_id=lab.network,
            name="steal",
            vip="10.5.0.101",
            protocol="tcp",
            port=81,
            backends=[{"ip": "10.5.0.11", "port": BACKEND_PORT}],
        )
    # Someone else's network does not exist for this tenant (no existence leak).
    assert err.value.status == 422 and "does not exist" in err.value.detail, err.value
    assert len(fabric.client.list("load-balancers")) == 1


def _tenant_client(fabric: Fabric, tenant_id: str) -> FabricClient:
    database = Database(f"sqlite:///{fabric.service.database_path}")
    try:
        with database.unversioned_write() as session:
            _row, token = create_token(session, actor=CLI, name="tenant", tenant_id=tenant_id)
    finally:
        database.dispose()
    return FabricClient(fabric.service.base_url, token)


def test_dead_backend_leaves_and_returns(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    eventually(
        lambda: lab.health() == {"b1": True, "b2": True, "b3": True},
        timeout=10,
        what="every backend healthy",
    )
    servers.kill("b2")
    # interval 0.5 s x fall 2: out within about a second (a closed port answers RST).
    eventually(lambda: not lab.health()["b2"], timeout=10, what="b2 reported unhealthy")
    h1_groups = "\n".join(fabric.hosts["h1"].dump_groups())
    assert "10.5.0.12" not in h1_groups and "10.5.0.13" in h1_groups, h1_groups
    outcome = connect(lab.vms["c"], 100, messages=2)
    assert outcome.errors == [], outcome.errors
    assert "b2" not in outcome.counts() and outcome.mixed == 0, outcome.counts()

    servers.start(lab.vms["b2"])
    eventually(lambda: lab.health()["b2"], timeout=10, what="b2 healthy again")
    outcome = connect(lab.vms["c"], 100, messages=2)
    assert outcome.errors == [], outcome.errors
    assert outcome.counts().get("b2", 0) > 0, outcome.counts()


def test_long_connection_survives_backend_changes(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    # One connection, 30 messages 0.1 s apart (3 s), while the backends change
    # twice: its backend is removed from the load balancer, then the weights move.
    long_one = start_connect(lab.vms["c"], 1, messages=30, pause=0.1)
    try:
        time.sleep(0.5)
        fabric.client.update("load-balancers", lab.lb["id"], backends=lab.backends({"b3": 5}))
        time.sleep(0.5)
        fabric.client.update(
            "load-balancers", lab.lb["id"], backends=lab.backends({"b1": 3, "b2": 1})
        )
        out, err = long_one.communicate(timeout=30)
    finally:
        if long_one.poll() is None:
            long_one.kill()
            long_one.wait()
    data = json.loads(out)
    assert data["errors"] == [] and data["mixed"] == 0 and data["served"][0], (data, err)
    # New connections follow the new backends.
    outcome = connect(lab.vms["c"], 40, messages=1)
    assert set(outcome.counts()) <= {"b1", "b2"} and outcome.errors == [], outcome


def test_no_usable_backend_is_refused_at_once(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    for name in ("b1", "b2", "b3"):
        servers.kill(name)
    eventually(lambda: not any(lab.health().values()), timeout=10, what="every backend unhealthy")
    started = time.monotonic()
    outcome = connect(lab.vms["c"], 5, messages=1)
    elapsed = time.monotonic() - started
    assert outcome.served == [""] * 5, outcome
    # Refused (a RST from the VIP), not timed out (the client's timeout is 5 s).
    assert all("ConnectionRefusedError" in e for e in outcome.errors), outcome.errors
    assert elapsed < 5, elapsed
