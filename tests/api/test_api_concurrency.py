"""Allocation under concurrent requests: ids, addresses and MACs stay unique, no request is lost."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from api.config import Settings
from api.store import resources
from api.store.db import Database
from api.store.principals import CLI

pytestmark = pytest.mark.api

T = TypeVar("T")


def all_at_once(count: int, task: Callable[[int], T]) -> list[T]:
    """Run `task(i)` for i in range(count) in `count` threads released together."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return task(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_forty_concurrent_network_creates_get_forty_distinct_ids(api: Any) -> None:
    tenant, caller = api.tenant("acme")
    responses = all_at_once(
        40, lambda i: caller.post("/networks", json={"name": f"n{i}", "type": "vlan"})
    )
    assert [r.status_code for r in responses] == [201] * 40, [
        r.text for r in responses if r.status_code != 201
    ]
    ids = [r.json()["segmentation_id"] for r in responses]
    assert sorted(ids) == list(range(1, 41))
    revisions = sorted(r.json()["revision"] for r in responses)
    assert revisions == list(range(2, 42))  # one bump each, none lost
    assert api.admin.revision() == 41
    listed = api.admin.get("/networks", params={"tenant_id": tenant["id"]}).json()
    assert listed["total"] == 40


def test_a_tiny_range_gives_409_to_everyone_beyond_it(
    api_factory: Callable[..., Any], api_settings_factory: Callable[..., Settings]
) -> None:
    api = api_factory(api_settings_factory(vlan_ranges="100-104"))
    tenant, _ = api.tenant("acme")
    body = {"tenant_id": tenant["id"], "type": "vlan"}
    responses = all_at_once(
        20, lambda i: api.admin.post("/networks", json={**body, "name": f"n{i}"})
    )
    created = [r.json()["segmentation_id"] for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert sorted(created) == [100, 101, 102, 103, 104]
    assert len(refused) == 15
    assert all(r.status_code == 409 and "no free VLAN id" in r.json()["detail"] for r in refused)
    assert api.admin.get("/networks").json()["total"] == 5
    assert api.admin.revision() == 1 + 5


def test_concurrent_ports_get_distinct_addresses_and_macs(api: Any) -> None:
    _, caller = api.tenant("acme")
    net = caller.create(
        "/networks", {"name": "web", "type": "vxlan", "cidr": "10.0.0.0/24", "gateway": "10.0.0.1"}
    )
    responses = all_at_once(30, lambda i: caller.post("/ports", json={"network_id": net["id"]}))
    assert {r.status_code for r in responses} == {201}
    ports = [r.json() for r in responses]
    assert sorted(p["ips"][0] for p in ports) == sorted(f"10.0.0.{i}" for i in range(2, 32))
    assert len({p["mac"] for p in ports}) == 30


def test_same_explicit_address_from_many_requests_is_given_once(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    net = api.network(tenant["id"], cidr="10.0.0.0/24")
    responses = all_at_once(
        12, lambda i: api.admin.post("/ports", json={"network_id": net["id"], "ips": ["10.0.0.77"]})
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 11


def test_independent_replicas_allocate_distinct_ids(api: Any, api_settings: Settings) -> None:
    """Several engines on one database, as API replicas in separate processes would have."""
    tenant, _ = api.tenant("acme")
    replicas = [Database(api_settings.database_url) for _ in range(4)]
    pools = api_settings.segment_pools()

    def create(index: int) -> int:
        with replicas[index % 4].write() as session:
            network = resources.create_network(
                session,
                actor=CLI,
                pools=pools,
                tenant_id=tenant["id"],
                name=f"r{index}",
                type="vxlan",
            )
            return network.segmentation_id

    try:
        ids = all_at_once(24, create)
    finally:
        for replica in replicas:
            replica.dispose()
    assert sorted(ids) == list(range(1, 25))
