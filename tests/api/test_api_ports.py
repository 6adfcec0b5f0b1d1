"""Ports: MAC/IP allocation and validation, binding, waiting for ACTIVE, dependents."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from controller.core.model import PortStatusUpdate

pytestmark = pytest.mark.api


def test_port_gets_a_local_mac_and_the_lowest_free_address(api: Any, net: dict[str, Any]) -> None:
    response = api.admin.post("/ports", json={"network_id": net["id"], "name": "web-1"})
    assert response.status_code == 201, response.text
    port = response.json()
    assert response.headers["location"] == f"/api/v1/ports/{port['id']}"
    assert port["mac"].startswith("02:") and len(port["mac"]) == 17
    assert port["ips"] == ["10.0.0.2"]  # .1 is the gateway
    assert port["tenant_id"] == net["tenant_id"] and port["origin"] == "api"
    assert port["status"] == "DOWN" and port["activation_seconds"] is None
    assert port["binding"] == {"host_id": None, "interface": None, "vm_id": None, "bound_at": None}

    fixed = api.admin.create("/ports", {"network_id": net["id"], "ips": ["10.0.0.3", "10.0.0.9"]})
    assert fixed["ips"] == ["10.0.0.3", "10.0.0.9"]
    assert api.admin.create("/ports", {"network_id": net["id"]})["ips"] == ["10.0.0.4"]
    assert api.admin.create("/ports", {"network_id": net["id"], "ips": []})["ips"] == []
    macs = {p["mac"] for p in api.admin.get("/ports").json()["items"]}
    assert len(macs) == 4


def test_allocation_skips_load_balancer_vips(api: Any, net: dict[str, Any]) -> None:
    api.admin.create(
        "/load-balancers",
        {"network_id": net["id"], "name": "lb", "vip": "10.0.0.2", "protocol": "tcp", "port": 80},
    )
    assert api.admin.create("/ports", {"network_id": net["id"]})["ips"] == ["10.0.0.3"]


def test_exhausted_subnet_is_409(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    tiny = api.network(tenant["id"], "tiny", cidr="10.0.0.0/30", gateway="10.0.0.1")
    assert api.admin.create("/ports", {"network_id": tiny["id"]})["ips"] == ["10.0.0.2"]
    with api.unchanged():
        api.problem(
            api.admin.post("/ports", json={"network_id": tiny["id"]}), 409, "no free address"
        )


def test_network_without_cidr_gives_no_ip_and_refuses_one(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    plain = api.network(tenant["id"], "plain")
    assert api.admin.create("/ports", {"network_id": plain["id"]})["ips"] == []
    with api.unchanged():
        api.problem(
            api.admin.post("/ports", json={"network_id": plain["id"], "ips": ["10.0.0.5"]}),
            422,
            "no cidr",
        )


@pytest.mark.parametrize(
    ("extra", "status", "fragment"),
    [
        ({"ips": ["10.0.1.5"]}, 422, "outside"),
        ({"ips": ["10.0.0.0"]}, 422, "network address"),
        ({"ips": ["10.0.0.255"]}, 422, "broadcast"),
        ({"ips": ["10.0.0.5", "10.0.0.5"]}, 422, "duplicate"),
        ({"ips": ["10.0.0.500"]}, 422, "ips"),
        ({"ips": "10.0.0.5"}, 422, "ips"),
        ({"ips": ["10.0.0.1"]}, 409, "gateway"),
        ({"ips": ["10.0.0.7"]}, 409, "already used by port"),
        ({"mac": "02:00:00:00:00:77"}, 409, "MAC"),
        ({"mac": "02:00:00:00:00:77".upper()}, 409, "MAC"),
        ({"mac": "01:00:5e:00:00:01"}, 422, "multicast"),
        ({"mac": "00:00:00:00:00:00"}, 422, "mac"),
        ({"mac": "02:00:00:00:00"}, 422, "mac"),
        ({"mac": 12}, 422, "mac"),
        ({"host_id": "00000000-0000-0000-0000-000000000000"}, 422, "host_id"),
        ({"interface": "tap9"}, 422, "interface"),
        ({"interface": "far-too-long-name"}, 422, "interface"),
        ({"network_id": "00000000-0000-0000-0000-000000000000"}, 422, "network_id"),
        ({"network_id": "web"}, 422, "network_id"),
        ({"status": "ACTIVE"}, 422, "status"),
        ({"unknown": 1}, 422, "unknown"),
    ],
)
def test_bad_port_bodies_change_nothing(
    api: Any, net: dict[str, Any], extra: dict[str, Any], status: int, fragment: str
) -> None:
    api.admin.create(
        "/ports", {"network_id": net["id"], "mac": "02:00:00:00:00:77", "ips": ["10.0.0.7"]}
    )
    with api.unchanged():
        api.problem(
            api.admin.post("/ports", json={"network_id": net["id"], **extra}), status, fragment
        )


def test_ip_used_as_a_vip_is_409(api: Any, net: dict[str, Any]) -> None:
    api.admin.create(
        "/load-balancers",
        {"network_id": net["id"], "name": "lb", "vip": "10.0.0.100", "protocol": "tcp", "port": 80},
    )
    with api.unchanged():
        api.problem(
            api.admin.post("/ports", json={"network_id": net["id"], "ips": ["10.0.0.100"]}),
            409,
            "VIP",
        )


def test_binding_and_rebinding(api: Any, net: dict[str, Any]) -> None:
    h1, h2 = api.host("h1"), api.host("h2")
    port = api.admin.create(
        "/ports",
        {"network_id": net["id"], "host_id": h1["id"], "interface": "tap0", "vm_id": "vm-1"},
    )
    binding = port["binding"]
    assert (binding["host_id"], binding["interface"], binding["vm_id"]) == (
        h1["id"],
        "tap0",
        "vm-1",
    )
    assert binding["bound_at"] is not None

    with api.unchanged():
        api.problem(
            api.admin.post(
                "/ports", json={"network_id": net["id"], "host_id": h1["id"], "interface": "tap0"}
            ),
            409,
            "tap0",
        )
    # the same interface name on another host is a different interface
    other = api.admin.create(
        "/ports", {"network_id": net["id"], "host_id": h2["id"], "interface": "tap0"}
    )
    api.admin.delete(f"/ports/{other['id']}")

    moved = api.admin.patch(f"/ports/{port['id']}", json={"host_id": h2["id"]}).json()
    assert moved["binding"]["host_id"] == h2["id"] and moved["binding"]["interface"] == "tap0"
    assert moved["binding"]["bound_at"] > binding["bound_at"]
    assert moved["status"] == "DOWN"

    renamed = api.admin.patch(
        f"/ports/{port['id']}", json={"name": "web-1", "vm_id": "vm-2"}
    ).json()
    assert renamed["binding"]["bound_at"] == moved["binding"]["bound_at"]  # binding unchanged

    unbound = api.admin.patch(f"/ports/{port['id']}", json={"host_id": None}).json()
    assert unbound["binding"]["host_id"] is None and unbound["binding"]["interface"] is None
    with api.unchanged():
        api.problem(
            api.admin.patch(f"/ports/{port['id']}", json={"interface": "tap1"}), 422, "host_id"
        )


def test_tenant_cannot_bind_its_port_to_a_host(api: Any) -> None:
    # Binding is the operator's (issue 10, defect 4): it used to be a 200.
    host = api.host("h1")
    _, caller = api.tenant("globex")
    network = caller.create("/networks", {"name": "n", "type": "vxlan", "cidr": "10.5.0.0/24"})
    port = caller.create("/ports", {"network_id": network["id"]})
    bound = caller.patch(f"/ports/{port['id']}", json={"host_id": host["id"], "interface": "vnet0"})
    api.problem(bound, 403, "only an admin token may set host_id and interface of a port")


def test_patch_replaces_ips_and_mac(api: Any, net: dict[str, Any]) -> None:
    port = api.admin.create("/ports", {"network_id": net["id"]})
    taken = api.admin.create("/ports", {"network_id": net["id"]})
    changed = api.admin.patch(
        f"/ports/{port['id']}",
        json={"ips": ["10.0.0.20", port["ips"][0]], "mac": "02:AA:BB:CC:DD:EE"},
    ).json()
    assert changed["ips"] == ["10.0.0.20", port["ips"][0]] and changed["mac"] == "02:aa:bb:cc:dd:ee"
    assert changed["revision"] > port["revision"]
    api.problem(api.admin.patch(f"/ports/{port['id']}", json={"ips": taken["ips"]}), 409)
    api.problem(api.admin.patch(f"/ports/{port['id']}", json={"mac": taken["mac"]}), 409)
    api.problem(
        api.admin.patch(f"/ports/{port['id']}", json={"network_id": net["id"]}), 422, "network_id"
    )
    # its own address is no conflict
    assert api.admin.patch(f"/ports/{port['id']}", json={"ips": ["10.0.0.20"]}).status_code == 200
    # the freed address is available again
    assert api.admin.create("/ports", {"network_id": net["id"], "ips": [port["ips"][0]]})


def test_wait_returns_the_port_as_it_is_after_the_timeout(api: Any, net: dict[str, Any]) -> None:
    port = api.admin.create("/ports", {"network_id": net["id"]})
    waited = api.admin.get(f"/ports/{port['id']}", params={"wait": "active", "timeout": 0.3})
    assert waited.status_code == 200 and waited.json()["status"] == "DOWN"


def test_wait_returns_once_the_controller_reports_active(api: Any, net: dict[str, Any]) -> None:
    host = api.host("h1")
    port = api.admin.create(
        "/ports", {"network_id": net["id"], "host_id": host["id"], "interface": "tap0"}
    )
    store = api.client.app.state.store
    bound_at = datetime.fromisoformat(port["binding"]["bound_at"])
    report = PortStatusUpdate(
        port_id=port["id"],
        status="ACTIVE",
        host_id=host["id"],
        at=bound_at + timedelta(seconds=1.5),
    )
    reporter = threading.Timer(0.3, store.record_port_status, args=([report],))
    reporter.start()
    try:
        waited = api.admin.get(
            f"/ports/{port['id']}", params={"wait": "active", "timeout": 60}
        ).json()
    finally:
        reporter.cancel()
        reporter.join()
    assert waited["status"] == "ACTIVE"
    assert waited["activation_seconds"] == pytest.approx(1.5)
    assert datetime.fromisoformat(waited["status_at"]) == report.at


@pytest.mark.parametrize(
    "params", [{"wait": "forever"}, {"wait": "active", "timeout": 0}, {"timeout": "x"}]
)
def test_bad_wait_parameters_are_422(api: Any, net: dict[str, Any], params: dict[str, Any]) -> None:
    port = api.admin.create("/ports", {"network_id": net["id"]})
    api.problem(api.admin.get(f"/ports/{port['id']}", params=params), 422)


def test_filters(api: Any, net: dict[str, Any]) -> None:
    h1 = api.host("h1")
    tenant_id = net["tenant_id"]
    other_net = api.network(tenant_id, "other")
    on_h1 = api.admin.create(
        "/ports", {"network_id": net["id"], "host_id": h1["id"], "interface": "t1"}
    )
    api.admin.create("/ports", {"network_id": net["id"]})
    elsewhere = api.admin.create("/ports", {"network_id": other_net["id"], "vm_id": "vm-9"})

    def ids(**params: Any) -> list[str]:
        return [p["id"] for p in api.admin.get("/ports", params=params).json()["items"]]

    assert ids(host_id=h1["id"]) == [on_h1["id"]]
    assert ids(network_id=other_net["id"]) == [elsewhere["id"]]
    assert ids(vm_id="vm-9") == [elsewhere["id"]]
    assert len(ids(network_id=net["id"])) == 2
    assert len(ids(status="DOWN")) == 3 and ids(status="ACTIVE") == []
    page = api.admin.get("/ports", params={"limit": 2, "offset": 1}).json()
    assert (page["total"], len(page["items"])) == (3, 2)


def test_delete_port(api: Any, net: dict[str, Any]) -> None:
    port = api.admin.create("/ports", {"network_id": net["id"]})
    assert api.admin.delete(f"/ports/{port['id']}").status_code == 204
    api.problem(api.admin.get(f"/ports/{port['id']}"), 404)
    api.problem(api.admin.delete(f"/ports/{port['id']}"), 404)
