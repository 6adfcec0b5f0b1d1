"""IPv6 per network: an ipv6_cidr besides (or instead of) cidr, ports' IPv6 addresses
allocated from it or given, precise refusals, and allocation under concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytestmark = pytest.mark.api


def test_dual_stack_ports_get_one_address_of_each_family(api: Any) -> None:
    _tenant, caller = api.tenant("acme")
    net = caller.create(
        "/networks",
        {"name": "dual", "type": "vxlan", "cidr": "10.0.0.0/24", "ipv6_cidr": "FD00:1::/64"},
    )
    assert net["ipv6_cidr"] == "fd00:1::/64"
    first = caller.create("/ports", {"network_id": net["id"]})
    second = caller.create("/ports", {"network_id": net["id"]})
    assert first["ips"] == ["10.0.0.1", "fd00:1::1"]
    assert second["ips"] == ["10.0.0.2", "fd00:1::2"]
    # Given addresses are stored as ipaddress writes them: one text per address.
    given = caller.create("/ports", {"network_id": net["id"], "ips": ["FD00:1:0::00A"]})
    assert given["ips"] == ["fd00:1::a"]
    api.problem(
        caller.post("/ports", json={"network_id": net["id"], "ips": ["fd00:1::a"]}),
        409,
        "fd00:1::a is already used by port",
    )
    # Freed by a PATCH, the lowest free one is handed out again.
    caller.patch(f"/ports/{first['id']}", json={"ips": []})
    assert caller.create("/ports", {"network_id": net["id"]})["ips"] == ["10.0.0.1", "fd00:1::1"]


def test_ipv6_only_network(api: Any) -> None:
    _tenant, caller = api.tenant("acme")
    net = caller.create("/networks", {"name": "six", "type": "vlan", "ipv6_cidr": "fd00:6::/120"})
    assert net["cidr"] is None
    assert caller.create("/ports", {"network_id": net["id"]})["ips"] == ["fd00:6::1"]
    api.problem(
        caller.post("/ports", json={"network_id": net["id"], "ips": ["10.0.0.5"]}),
        422,
        "has no cidr",
    )


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"ips": ["fd00:2::5"]}, 422, "fd00:2::5 is outside fd00:1::/64"),
        ({"ips": ["fd00:1::"]}, 422, "fd00:1:: is the subnet-router anycast address"),
        ({"ips": ["fe80::1"]}, 422, "fe80::1 is link-local: a port's link-local address comes"),
        ({"ips": ["ff02::1"]}, 422, "ff02::1 is not a unicast address"),
        ({"ips": ["::"]}, 422, ":: is not a unicast address"),
        ({"ips": ["::ffff:10.0.0.5"]}, 422, "IPv4-mapped"),
        ({"ips": ["fd00:1::zz"]}, 422, "'fd00:1::zz' is not an IPv4 or IPv6 address"),
        ({"ips": ["fd00:1::5", "FD00:1::0005"]}, 422, "duplicate address fd00:1::5"),
    ],
)
def test_bad_ipv6_port_addresses_change_nothing(
    api: Any, body: dict[str, Any], status: int, fragment: str
) -> None:
    tenant, _ = api.tenant("acme")
    net = api.network(tenant["id"], "dual", cidr="10.0.0.0/24", ipv6_cidr="fd00:1::/64")
    with api.unchanged():
        api.problem(
            api.admin.post("/ports", json={"network_id": net["id"], **body}), status, fragment
        )


def test_ipv6_address_on_a_network_without_ipv6_cidr_is_refused(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    net = api.network(tenant["id"], "four", cidr="10.0.0.0/24")
    with api.unchanged():
        api.problem(
            api.admin.post("/ports", json={"network_id": net["id"], "ips": ["fd00::5"]}),
            422,
            f"network {net['id']} has no ipv6_cidr, so its ports cannot have IPv6 addresses",
        )


@pytest.mark.parametrize(
    ("ipv6_cidr", "fragment"),
    [
        ("fd00:1::1/64", "has host bits set"),
        ("fd00:1::", "needs a prefix length"),
        ("fd00:1::/127", "prefix length must be <= 126"),
        ("fe80::/64", "link-local network"),
        ("ff00::/8", "multicast network"),
        ("10.0.0.0/24", "is not an IPv6 network"),
    ],
)
def test_bad_ipv6_cidrs_are_422(api: Any, ipv6_cidr: str, fragment: str) -> None:
    tenant, _ = api.tenant("acme")
    body = {"tenant_id": tenant["id"], "name": "n", "type": "vlan", "ipv6_cidr": ipv6_cidr}
    with api.unchanged():
        body_out = api.problem(api.admin.post("/networks", json=body), 422, fragment)
    assert "ipv6_cidr" in body_out["detail"]


def test_ipv6_cidr_cannot_be_changed(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    net = api.network(tenant["id"], "six", ipv6_cidr="fd00:6::/64")
    with api.unchanged():
        api.problem(
            api.admin.patch(f"/networks/{net['id']}", json={"ipv6_cidr": "fd00:7::/64"}),
            422,
            "ipv6_cidr",
            "cannot be changed after creation",
        )


def test_concurrent_ports_get_distinct_ipv6_addresses(api: Any) -> None:
    _, caller = api.tenant("acme")
    net = caller.create("/networks", {"name": "six", "type": "vxlan", "ipv6_cidr": "fd00:6::/64"})
    barrier = threading.Barrier(20)

    def create(_index: int) -> Any:
        barrier.wait(timeout=30)
        return caller.post("/ports", json={"network_id": net["id"]})

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(create, range(20)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    addresses = sorted(r.json()["ips"][0] for r in responses)
    assert addresses == sorted(f"fd00:6::{i:x}" for i in range(1, 21))


def test_load_balancer_backend_by_port_takes_its_ipv4_address(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    net = api.network(tenant["id"], "dual", cidr="10.0.0.0/24", ipv6_cidr="fd00:1::/64")
    dual = api.admin.create("/ports", {"network_id": net["id"], "ips": ["fd00:1::5", "10.0.0.5"]})
    six_only = api.admin.create("/ports", {"network_id": net["id"], "ips": ["fd00:1::6"]})
    body = {"network_id": net["id"], "name": "web", "vip": "10.0.0.100", "protocol": "tcp"}
    lb = api.admin.create(
        "/load-balancers", {**body, "port": 80, "backends": [{"port_id": dual["id"], "port": 80}]}
    )
    assert [b["ip"] for b in lb["backends"]] == ["10.0.0.5"]
    with api.unchanged():
        api.problem(
            api.admin.post(
                "/load-balancers",
                json={
                    **body,
                    "name": "six",
                    "port": 81,
                    "backends": [{"port_id": six_only["id"], "port": 80}],
                },
            ),
            422,
            f"port {six_only['id']} has no IPv4 address",
        )
