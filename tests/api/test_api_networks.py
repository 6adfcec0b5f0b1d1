"""Networks: segmentation id allocation, CIDR rules, immutability, scoping, dependents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.api


def test_tenant_creates_networks_in_its_own_tenant_with_lowest_free_ids(api: Any) -> None:
    tenant, caller = api.tenant("acme")
    response = caller.post(
        "/networks",
        json={"name": "web", "type": "vlan", "cidr": "10.0.0.0/24", "gateway": "10.0.0.1"},
    )
    assert response.status_code == 201, response.text
    web = response.json()
    assert response.headers["location"] == f"/api/v1/networks/{web['id']}"
    assert web["tenant_id"] == tenant["id"]
    assert (web["type"], web["segmentation_id"]) == ("vlan", 1)
    assert (web["cidr"], web["gateway"]) == ("10.0.0.0/24", "10.0.0.1")
    db = caller.create("/networks", {"name": "db", "type": "vlan"})
    overlay = caller.create("/networks", {"name": "overlay", "type": "vxlan"})
    assert db["segmentation_id"] == 2 and overlay["segmentation_id"] == 1
    # a freed id is handed out again, lowest first
    assert caller.delete(f"/networks/{web['id']}").status_code == 204
    assert caller.create("/networks", {"name": "again", "type": "vlan"})["segmentation_id"] == 1


def test_admin_may_choose_a_segmentation_id(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    chosen = api.network(tenant["id"], "storage", type="vlan", segmentation_id=120)
    assert chosen["segmentation_id"] == 120
    assert api.network(tenant["id"], "next", type="vlan")["segmentation_id"] == 1
    api.problem(
        api.admin.post(
            "/networks",
            json={"tenant_id": tenant["id"], "name": "dup", "type": "vlan", "segmentation_id": 120},
        ),
        409,
        "120",
    )
    # the same number is free in the other type
    assert (
        api.network(tenant["id"], "vx", type="vxlan", segmentation_id=120)["segmentation_id"] == 120
    )


@pytest.mark.parametrize(
    ("network_type", "segmentation_id", "status"),
    [
        ("vlan", 0, 422),
        ("vlan", 4095, 422),
        ("vlan", 5000, 422),
        ("vlan", -1, 422),
        ("vxlan", 0, 422),
        ("vxlan", 16_777_216, 422),
        ("vlan", "7", 422),
        ("vlan", 7.5, 422),
    ],
)
def test_out_of_range_segmentation_ids_are_422(
    api: Any, network_type: str, segmentation_id: Any, status: int
) -> None:
    tenant, _ = api.tenant("acme")
    body = {
        "tenant_id": tenant["id"],
        "name": "n",
        "type": network_type,
        "segmentation_id": segmentation_id,
    }
    with api.unchanged():
        api.problem(api.admin.post("/networks", json=body), status, "segmentation_id")


def test_tenant_may_not_choose_a_segmentation_id(api: Any) -> None:
    _, caller = api.tenant("acme")
    with api.unchanged():
        api.problem(
            caller.post("/networks", json={"name": "n", "type": "vlan", "segmentation_id": 10}),
            403,
            "segmentation_id",
        )


def test_tenant_cannot_create_networks_for_another_tenant(api: Any) -> None:
    other, _ = api.tenant("globex")
    _, caller = api.tenant("acme")
    with api.unchanged():
        api.problem(
            caller.post("/networks", json={"tenant_id": other["id"], "name": "n", "type": "vlan"}),
            403,
            "own tenant",
        )


def test_admin_must_name_an_existing_tenant(api: Any) -> None:
    with api.unchanged():
        api.problem(
            api.admin.post("/networks", json={"name": "n", "type": "vlan"}), 422, "tenant_id"
        )
        api.problem(
            api.admin.post(
                "/networks",
                json={
                    "tenant_id": "00000000-0000-0000-0000-000000000000",
                    "name": "n",
                    "type": "vlan",
                },
            ),
            422,
            "does not exist",
        )


def test_configured_ranges_and_reservations_are_honoured(
    api_factory: Callable[..., Any],
    api_settings_factory: Callable[..., Any],
) -> None:
    api = api_factory(
        api_settings_factory(vlan_ranges="100-102", vlan_reserved="101", vni_ranges="5000-5001")
    )
    tenant, _ = api.tenant("acme")
    ids = [api.network(tenant["id"], f"v{i}", type="vlan")["segmentation_id"] for i in range(2)]
    assert ids == [100, 102]
    before = api.state()
    api.problem(
        api.admin.post("/networks", json={"tenant_id": tenant["id"], "name": "v3", "type": "vlan"}),
        409,
        "no free VLAN id",
    )
    api.problem(
        api.admin.post(
            "/networks",
            json={"tenant_id": tenant["id"], "name": "r", "type": "vlan", "segmentation_id": 101},
        ),
        422,
        "outside",
    )
    api.problem(
        api.admin.post(
            "/networks",
            json={"tenant_id": tenant["id"], "name": "r", "type": "vlan", "segmentation_id": 7},
        ),
        422,
        "100,102",
    )
    assert api.state() == before
    assert api.network(tenant["id"], "x", type="vxlan")["segmentation_id"] == 5000


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"cidr": "10.0.0.1/24"}, "cidr"),
        ({"cidr": "10.0.0.0/33"}, "cidr"),
        ({"cidr": "10.0.0.0"}, "cidr"),
        ({"cidr": "fd00::/64"}, "cidr"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.1.1"}, "gateway"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.0.0"}, "gateway"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.0.255"}, "gateway"),
        ({"gateway": "10.0.0.1"}, "gateway"),
        ({"type": "gre"}, "type"),
        ({"name": "bad name!"}, "name"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_network_bodies_are_422_naming_the_field(
    api: Any, extra: dict[str, Any], field: str
) -> None:
    tenant, _ = api.tenant("acme")
    body = {"tenant_id": tenant["id"], "name": "n", "type": "vxlan", **extra}
    with api.unchanged():
        problem = api.problem(api.admin.post("/networks", json=body), 422, field)
        assert any(field in map(str, e["loc"]) for e in problem["errors"])


def test_network_names_are_unique_per_tenant(api: Any) -> None:
    _, acme_caller = api.tenant("acme")
    _, globex_caller = api.tenant("globex")
    acme_caller.create("/networks", {"name": "web", "type": "vxlan"})
    other = acme_caller.create("/networks", {"name": "db", "type": "vxlan"})
    globex_caller.create("/networks", {"name": "web", "type": "vxlan"})  # fine: other tenant
    with api.unchanged():
        api.problem(acme_caller.post("/networks", json={"name": "web", "type": "vlan"}), 409, "web")
        api.problem(acme_caller.patch(f"/networks/{other['id']}", json={"name": "web"}), 409)


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "vlan"), ("tenant_id", None), ("segmentation_id", 99), ("cidr", "10.9.0.0/24")],
)
def test_immutable_network_fields_are_422_naming_the_field(
    api: Any, field: str, value: Any
) -> None:
    tenant, _ = api.tenant("acme")
    network = api.network(tenant["id"], cidr="10.0.0.0/24")
    with api.unchanged():
        api.problem(
            api.admin.patch(f"/networks/{network['id']}", json={field: value}),
            422,
            field,
            "cannot be changed",
        )


def test_gateway_can_be_changed_within_the_cidr(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    network = api.network(tenant["id"], cidr="10.0.0.0/24", gateway="10.0.0.1")
    port = api.admin.create("/ports", {"network_id": network["id"], "ips": ["10.0.0.50"]})
    with api.unchanged():
        api.problem(
            api.admin.patch(f"/networks/{network['id']}", json={"gateway": "10.1.0.1"}), 422
        )
        api.problem(
            api.admin.patch(f"/networks/{network['id']}", json={"gateway": "10.0.0.50"}),
            409,
            port["id"],
        )
    moved = api.admin.patch(f"/networks/{network['id']}", json={"gateway": "10.0.0.254"}).json()
    assert moved["gateway"] == "10.0.0.254"
    cleared = api.admin.patch(f"/networks/{network['id']}", json={"gateway": None}).json()
    assert cleared["gateway"] is None
    plain = api.network(tenant["id"], "plain")
    api.problem(
        api.admin.patch(f"/networks/{plain['id']}", json={"gateway": "10.0.0.1"}), 422, "no cidr"
    )


def test_network_with_ports_or_load_balancers_cannot_be_deleted(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    with_port = api.network(tenant["id"], "a", cidr="10.0.0.0/24")
    port = api.admin.create("/ports", {"network_id": with_port["id"]})
    with_lb = api.network(tenant["id"], "b", cidr="10.1.0.0/24")
    lb = api.admin.create(
        "/load-balancers",
        {
            "network_id": with_lb["id"],
            "name": "lb",
            "vip": "10.1.0.100",
            "protocol": "tcp",
            "port": 80,
        },
    )
    with api.unchanged():
        api.problem(api.admin.delete(f"/networks/{with_port['id']}"), 409, "1 port")
        api.problem(api.admin.delete(f"/networks/{with_lb['id']}"), 409, "1 load balancer")
    api.admin.delete(f"/ports/{port['id']}")
    api.admin.delete(f"/load-balancers/{lb['id']}")
    assert api.admin.delete(f"/networks/{with_port['id']}").status_code == 204
    assert api.admin.delete(f"/networks/{with_lb['id']}").status_code == 204


def test_filters_and_pagination(api: Any) -> None:
    acme, _ = api.tenant("acme")
    globex, _ = api.tenant("globex")
    created = [
        api.network(acme["id"], f"a{i}", type="vlan" if i % 2 else "vxlan") for i in range(5)
    ]
    api.network(globex["id"], "g0")

    vlans = api.admin.get("/networks", params={"tenant_id": acme["id"], "type": "vlan"}).json()
    assert vlans["total"] == 2 and {n["name"] for n in vlans["items"]} == {"a1", "a3"}

    first = api.admin.get("/networks", params={"tenant_id": acme["id"], "limit": 2}).json()
    second = api.admin.get(
        "/networks", params={"tenant_id": acme["id"], "limit": 2, "offset": 2}
    ).json()
    last = api.admin.get(
        "/networks", params={"tenant_id": acme["id"], "limit": 2, "offset": 4}
    ).json()
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    pages = [n["id"] for n in first["items"] + second["items"] + last["items"]]
    assert pages == [n["id"] for n in created]
    assert api.admin.get("/networks").json()["total"] == 6
    assert api.admin.get("/networks", params={"offset": 50}).json()["items"] == []

    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"type": "gre"}, {"limit": "x"}):
        api.problem(api.admin.get("/networks", params=params), 422)
    assert api.admin.get("/networks", params={"limit": 1000}).status_code == 200


def test_mtu_and_dhcp_settings_default_by_type_and_are_checked(api: Any) -> None:
    _tenant, caller = api.tenant("acme")
    overlay = caller.create(
        "/networks", {"name": "overlay", "type": "vxlan", "cidr": "10.0.0.0/24"}
    )
    # The default underlay MTU (1500) minus VXLAN's 50 bytes; VLAN: 1500; DHCP on, no DNS.
    assert (overlay["mtu"], overlay["dhcp_enabled"], overlay["dns_servers"]) == (1450, True, [])
    vlan = caller.create(
        "/networks",
        {"name": "v", "type": "vlan", "dns_servers": ["10.0.0.53", "9.9.9.9"], "mtu": 1400},
    )
    assert (vlan["mtu"], vlan["dns_servers"]) == (1400, ["10.0.0.53", "9.9.9.9"])
    api.problem(
        caller.post("/networks", json={"name": "big", "type": "vxlan", "mtu": 1500}),
        422,
        "1500 exceeds what VXLAN over the underlay MTU 1500 carries (1450)",
    )
    api.problem(caller.post("/networks", json={"name": "tiny", "type": "vlan", "mtu": 100}), 422)
    api.problem(
        caller.post("/networks", json={"name": "d", "type": "vlan", "dns_servers": ["x"]}), 422
    )
    changed = caller.patch(
        f"/networks/{vlan['id']}", json={"dhcp_enabled": False, "dns_servers": []}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["dhcp_enabled"], changed.json()["dns_servers"]) == (False, [])
    api.problem(caller.patch(f"/networks/{vlan['id']}", json={"mtu": 1300}), 422)
    assert caller.get(f"/networks/{vlan['id']}").json()["mtu"] == 1400
