"""Load balancers: listeners, VIP and backend rules, replace-on-PATCH, health check."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.model import BackendHealthUpdate

pytestmark = pytest.mark.api


def listener(net: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "network_id": net["id"],
        "name": "web-http",
        "vip": "10.0.0.100",
        "protocol": "tcp",
        "port": 80,
        **fields,
    }


def test_load_balancer_lifecycle(api: Any, net: dict[str, Any]) -> None:
    member = api.admin.create(
        "/ports", {"network_id": net["id"], "ips": ["10.0.0.10", "10.0.0.11"]}
    )
    response = api.admin.post(
        "/load-balancers",
        json=listener(
            net,
            backends=[
                {"port_id": member["id"], "port": 8080, "weight": 3},
                {"ip": "10.0.0.20", "port": 8080},
                {"ip": "10.0.0.11", "port_id": member["id"], "port": 8081},
            ],
        ),
    )
    assert response.status_code == 201, response.text
    lb = response.json()
    assert response.headers["location"] == f"/api/v1/load-balancers/{lb['id']}"
    assert lb["tenant_id"] == net["tenant_id"]
    assert lb["health_check"] == {
        "enabled": True,
        "interval": 2.0,
        "timeout": 1.0,
        "rise": 2,
        "fall": 2,
    }
    assert [
        (b["ip"], b["port"], b["weight"], b["port_id"], b["healthy"]) for b in lb["backends"]
    ] == [
        ("10.0.0.10", 8080, 3, member["id"], True),
        ("10.0.0.20", 8080, 1, None, True),
        ("10.0.0.11", 8081, 1, member["id"], True),
    ]
    assert api.admin.get(f"/load-balancers/{lb['id']}").json() == lb

    # a second listener on the same VIP
    udp = api.admin.create(
        "/load-balancers", listener(net, name="web-dns", protocol="udp", port=53)
    )
    assert udp["vip"] == lb["vip"]
    assert api.admin.get("/load-balancers", params={"network_id": net["id"]}).json()["total"] == 2

    assert api.admin.delete(f"/load-balancers/{lb['id']}").status_code == 204
    assert api.admin.get(f"/load-balancers/{lb['id']}").status_code == 404
    # the member port is free to go now
    assert api.admin.delete(f"/ports/{member['id']}").status_code == 204


@pytest.mark.parametrize(
    ("fields", "status", "fragment"),
    [
        ({"vip": "10.0.1.100"}, 422, "outside"),
        ({"vip": "10.0.0.255"}, 422, "broadcast"),
        ({"vip": "10.0.0.1"}, 409, "gateway"),
        ({"vip": "10.0.0.7"}, 409, "port"),
        ({"port": 0}, 422, "port"),
        ({"port": 65536}, 422, "port"),
        # The health probes' source ports: the first, the last, and the one before.
        ({"port": 61440}, 422, "61440 is inside 61440-61695, the source ports of the health"),
        ({"port": 61695, "protocol": "udp"}, 422, "61695 is inside 61440-61695"),
        ({"protocol": "sctp"}, 422, "protocol"),
        ({"name": "existing"}, 409, "existing"),
        ({"vip": "10.0.0.50", "port": 443}, 409, "listener"),
        ({"backends": [{"ip": "10.0.1.5", "port": 80}]}, 422, "backends.0.ip"),
        ({"backends": [{"ip": "10.0.0.5", "port": 80, "weight": 0}]}, 422, "weight"),
        ({"backends": [{"ip": "10.0.0.5", "port": 80, "weight": 101}]}, 422, "weight"),
        ({"backends": [{"ip": "10.0.0.5", "port": 0}]}, 422, "port"),
        ({"backends": [{"port": 80}]}, 422, "ip or a port_id"),
        (
            {"backends": [{"ip": "10.0.0.5", "port": 80}, {"ip": "10.0.0.5", "port": 80}]},
            422,
            "duplicate",
        ),
        ({"backends": [{"ip": "10.0.0.100", "port": 80}]}, 422, "VIP"),
        ({"backends": [{"ip": "10.0.0.5", "port": 80, "extra": 1}]}, 422, "extra"),
        (
            {"backends": [{"port_id": "00000000-0000-0000-0000-000000000000", "port": 80}]},
            422,
            "port_id",
        ),
        (
            {"backends": [{"port_id": "{member}", "ip": "10.0.0.9", "port": 80}]},
            422,
            "not an address",
        ),
        ({"backends": [{"port_id": "{stranger}", "port": 80}]}, 422, "not on network"),
        ({"health_check": {"interval": 1, "timeout": 2}}, 422, "timeout"),
        ({"health_check": {"rise": 0}}, 422, "rise"),
        ({"health_check": {"enabled": "yes"}}, 422, "enabled"),
    ],
)
def test_bad_load_balancers_change_nothing(
    api: Any, net: dict[str, Any], fields: dict[str, Any], status: int, fragment: str
) -> None:
    member = api.admin.create("/ports", {"network_id": net["id"], "ips": ["10.0.0.7"]})
    other_net = api.network(
        net["tenant_id"], "other", cidr="10.0.0.0/24"
    )  # same cidr, other segment
    stranger = api.admin.create("/ports", {"network_id": other_net["id"], "ips": ["10.0.0.8"]})
    api.admin.create("/load-balancers", listener(net, name="existing", vip="10.0.0.50", port=443))
    fields = copy.deepcopy(fields)  # parameters are shared between the database kinds
    for backend in fields.get("backends", []):
        if "port_id" in backend:
            backend["port_id"] = backend["port_id"].format(
                member=member["id"], stranger=stranger["id"]
            )
    with api.unchanged():
        api.problem(
            api.admin.post("/load-balancers", json=listener(net, **fields)), status, fragment
        )


def test_listener_ports_around_the_probe_range_are_accepted(
    api: Any, net: dict[str, Any]
) -> None:
    for port in (61439, 61696):
        created = api.admin.create("/load-balancers", listener(net, name=f"p{port}", port=port))
        assert created["port"] == port


def test_network_without_cidr_cannot_have_a_vip(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    plain = api.network(tenant["id"], "plain")
    with api.unchanged():
        api.problem(api.admin.post("/load-balancers", json=listener(plain)), 422, "no cidr")


def test_port_with_no_address_cannot_be_a_backend(api: Any, net: dict[str, Any]) -> None:
    bare = api.admin.create("/ports", {"network_id": net["id"], "ips": []})
    api.problem(
        api.admin.post(
            "/load-balancers", json=listener(net, backends=[{"port_id": bare["id"], "port": 80}])
        ),
        422,
        "no IP",
    )


def test_patch_replaces_backends_and_keeps_known_health(api: Any, net: dict[str, Any]) -> None:
    lb = api.admin.create(
        "/load-balancers",
        listener(net, backends=[{"ip": "10.0.0.10", "port": 80}, {"ip": "10.0.0.11", "port": 80}]),
    )
    store = api.client.app.state.store
    store.record_backend_health(
        [
            BackendHealthUpdate(
                load_balancer_id=lb["id"],
                ip="10.0.0.10",
                port=80,
                healthy=False,
                at=datetime.now(UTC),
            )
        ]
    )
    patched = api.admin.patch(
        f"/load-balancers/{lb['id']}",
        json={
            "backends": [
                {"ip": "10.0.0.12", "port": 80, "weight": 5},
                {"ip": "10.0.0.10", "port": 80, "weight": 2},
            ]
        },
    ).json()
    assert [(b["ip"], b["weight"], b["healthy"]) for b in patched["backends"]] == [
        ("10.0.0.12", 5, True),
        ("10.0.0.10", 2, False),
    ]
    assert patched["revision"] > lb["revision"]

    tuned = api.admin.patch(
        f"/load-balancers/{lb['id']}", json={"health_check": {"rise": 3, "interval": 5}}
    ).json()
    assert tuned["health_check"] == {
        "enabled": True,
        "interval": 5.0,
        "timeout": 1.0,
        "rise": 3,
        "fall": 2,
    }
    assert tuned["backends"] == patched["backends"]

    with api.unchanged():
        api.problem(
            api.admin.patch(f"/load-balancers/{lb['id']}", json={"health_check": {"timeout": 9}}),
            422,
            "timeout",
        )
        for field, value in (
            ("vip", "10.0.0.101"),
            ("port", 81),
            ("protocol", "udp"),
            ("network_id", net["id"]),
        ):
            api.problem(
                api.admin.patch(f"/load-balancers/{lb['id']}", json={field: value}),
                422,
                field,
                "cannot be changed",
            )
        api.problem(
            api.admin.patch(
                f"/load-balancers/{lb['id']}",
                json={"backends": [{"ip": "10.0.0.5", "port": 80, "weight": 0}]},
            ),
            422,
        )

    emptied = api.admin.patch(f"/load-balancers/{lb['id']}", json={"backends": []}).json()
    assert emptied["backends"] == []


def test_backend_port_is_protected(api: Any, net: dict[str, Any]) -> None:
    member = api.admin.create("/ports", {"network_id": net["id"], "ips": ["10.0.0.10"]})
    lb = api.admin.create(
        "/load-balancers", listener(net, backends=[{"port_id": member["id"], "port": 80}])
    )
    with api.unchanged():
        api.problem(api.admin.delete(f"/ports/{member['id']}"), 409, lb["id"])
        api.problem(
            api.admin.patch(f"/ports/{member['id']}", json={"ips": ["10.0.0.11"]}), 409, "backend"
        )
    # adding an address is fine; the backend's address stays
    assert (
        api.admin.patch(
            f"/ports/{member['id']}", json={"ips": ["10.0.0.10", "10.0.0.11"]}
        ).status_code
        == 200
    )
