"""Address allocation from the per-network cursor: still the lowest free address after
every kind of release, and unique under concurrent creates and deletes."""

from __future__ import annotations

import ipaddress
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytestmark = pytest.mark.api


def ip_of(caller: Any, network_id: str, **body: Any) -> str:
    address: str = caller.create("/ports", {"network_id": network_id, **body})["ips"][0]
    return address


def test_every_release_makes_its_address_the_next_one_handed_out(api: Any) -> None:
    tenant, caller = api.tenant("acme")
    net = api.network(tenant["id"], cidr="10.0.0.0/24", gateway="10.0.0.1")
    ports = [caller.create("/ports", {"network_id": net["id"]}) for _ in range(6)]
    assert [p["ips"][0] for p in ports] == [f"10.0.0.{i}" for i in range(2, 8)]
    # Explicit addresses ahead of the cursor are skipped.
    caller.create("/ports", {"network_id": net["id"], "ips": ["10.0.0.8", "10.0.0.9"]})
    assert ip_of(caller, net["id"]) == "10.0.0.10"

    # A deleted port's address.
    assert caller.delete(f"/ports/{ports[3]['id']}").status_code == 204
    assert ip_of(caller, net["id"]) == "10.0.0.5"
    # An address a port gives up when its addresses change.
    assert caller.patch(f"/ports/{ports[1]['id']}", json={"ips": ["10.0.0.200"]}).is_success
    assert ip_of(caller, net["id"]) == "10.0.0.3"
    # The gateway, moved elsewhere.
    assert api.admin.patch(f"/networks/{net['id']}", json={"gateway": "10.0.0.254"}).is_success
    assert ip_of(caller, net["id"]) == "10.0.0.1"
    # A deleted load balancer's VIP.
    lb = caller.create(
        "/load-balancers",
        {"network_id": net["id"], "name": "lb", "vip": "10.0.0.11", "protocol": "tcp", "port": 80},
    )
    assert ip_of(caller, net["id"]) == "10.0.0.12"
    assert caller.delete(f"/load-balancers/{lb['id']}").status_code == 204
    assert ip_of(caller, net["id"]) == "10.0.0.11"
    # Nothing below the cursor was lost on the way: the next one is the next in line.
    assert ip_of(caller, net["id"]) == "10.0.0.13"


def test_a_refused_create_moves_no_cursor(api: Any) -> None:
    tenant, caller = api.tenant("acme")
    net = api.network(tenant["id"], cidr="10.0.0.0/24", gateway="10.0.0.1")
    assert ip_of(caller, net["id"]) == "10.0.0.2"
    unknown_host = "0b7d3c1e-2a4f-4e6b-8c9d-1e2f3a4b5c6d"
    with api.unchanged():
        # The address is allocated first, then the binding refuses the request.
        body = {"network_id": net["id"], "host_id": unknown_host}
        api.problem(api.admin.post("/ports", json=body), 422, "does not exist")
    assert ip_of(caller, net["id"]) == "10.0.0.3"


def test_concurrent_creates_and_deletes_keep_addresses_unique_and_reuse_freed_ones(
    api: Any,
) -> None:
    tenant, caller = api.tenant("acme")
    net = api.network(tenant["id"], cidr="10.0.0.0/24", gateway="10.0.0.1")
    first = [caller.create("/ports", {"network_id": net["id"]}) for _ in range(40)]
    doomed = first[::2]  # 10.0.0.2, .4, ... .40
    barrier = threading.Barrier(40)

    def task(index: int) -> Any:
        barrier.wait(timeout=30)
        if index < 20:
            return caller.delete(f"/ports/{doomed[index]['id']}")
        return caller.post("/ports", json={"network_id": net["id"]})

    with ThreadPoolExecutor(max_workers=40) as pool:
        responses = list(pool.map(task, range(40)))
    assert [r.status_code for r in responses] == [204] * 20 + [201] * 20
    listed = api.admin.get("/ports", params={"network_id": net["id"], "limit": 1000}).json()
    held = [p["ips"][0] for p in listed["items"]]
    assert len(held) == len(set(held)) == 40
    # Whatever the interleaving, every address handed out was free when it was: the
    # 20 new ones are the lowest free at their turn, so none lies above .61 (the
    # 21st address after the 40 first ones) and the next one fills the lowest gap.
    numbers = sorted(int(ipaddress.IPv4Address(ip)) & 0xFF for ip in held)
    assert numbers[-1] <= 61
    expected_next = min(set(range(2, 255)) - set(numbers))
    assert ip_of(caller, net["id"]) == f"10.0.0.{expected_next}"
