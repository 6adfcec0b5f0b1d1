"""Tenants and hosts: CRUD, Location headers, uniqueness, dependents, bad input."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.api


def test_tenant_lifecycle(api: Any) -> None:
    response = api.admin.post("/tenants", json={"name": "acme", "description": "ACME Corp."})
    assert response.status_code == 201
    tenant = response.json()
    assert response.headers["location"] == f"/api/v1/tenants/{tenant['id']}"
    assert api.admin.get(response.headers["location"][len("/api/v1") :]).json() == tenant
    assert tenant["revision"] == api.admin.revision() == 1

    patched = api.admin.patch(f"/tenants/{tenant['id']}", json={"description": "EU"}).json()
    assert patched["description"] == "EU" and patched["name"] == "acme"
    assert patched["revision"] == 2 and patched["updated_at"] >= tenant["updated_at"]
    assert patched["created_at"] == tenant["created_at"]

    assert api.admin.delete(f"/tenants/{tenant['id']}").status_code == 204
    assert api.admin.get(f"/tenants/{tenant['id']}").status_code == 404
    assert api.admin.revision() == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 65},
        {"name": "has space"},
        {"name": 42},
        {"name": "ok", "description": 5},
        {"name": "ok", "id": "00000000-0000-0000-0000-000000000000"},
        {"name": "ok", "revision": 7},
    ],
)
def test_bad_tenant_bodies_are_422_and_change_nothing(api: Any, body: Any) -> None:
    api.tenant("existing")
    with api.unchanged():
        body_problem = api.problem(api.admin.post("/tenants", json=body), 422)
        assert body_problem["errors"] and all(
            "loc" in e and "msg" in e for e in body_problem["errors"]
        )


def test_duplicate_tenant_name_is_409(api: Any) -> None:
    api.tenant("acme")
    other, _ = api.tenant("globex")
    with api.unchanged():
        api.problem(api.admin.post("/tenants", json={"name": "acme"}), 409, "acme")
        api.problem(api.admin.patch(f"/tenants/{other['id']}", json={"name": "acme"}), 409)


def test_tenant_with_networks_cannot_be_deleted(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    network = api.network(tenant["id"])
    with api.unchanged():
        api.problem(api.admin.delete(f"/tenants/{tenant['id']}"), 409, "1 network")
    assert api.admin.delete(f"/networks/{network['id']}").status_code == 204
    assert api.admin.delete(f"/tenants/{tenant['id']}").status_code == 204


def test_unknown_ids_are_404_problems(api: Any) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for resource in ("tenants", "hosts", "networks", "ports", "load-balancers"):
        api.problem(api.admin.get(f"/{resource}/{missing}"), 404, "not found")
        api.problem(api.admin.delete(f"/{resource}/{missing}"), 404)
        api.problem(api.admin.get(f"/{resource}/not-a-uuid"), 404)


def test_host_lifecycle(api: Any) -> None:
    body = {
        "name": "compute-1",
        "ovsdb_remote": "tcp:127.0.0.1:6640",
        "libvirt_uri": "qemu:///system",
        "tunnel_ip": "192.0.2.11",
        "uplink": "eth1",
    }
    response = api.admin.post("/hosts", json=body)
    assert response.status_code == 201
    host = response.json()
    assert response.headers["location"] == f"/api/v1/hosts/{host['id']}"
    assert {k: host[k] for k in body} == body
    assert host["ovsdb_connected"] is False and host["openflow_connected"] is False
    assert host["datapath_id"] is None and host["status_at"] is None

    patched = api.admin.patch(
        f"/hosts/{host['id']}", json={"tunnel_ip": None, "uplink": "bond0"}
    ).json()
    assert patched["tunnel_ip"] is None and patched["uplink"] == "bond0"
    listing = api.admin.get("/hosts").json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == host["id"]
    assert api.admin.delete(f"/hosts/{host['id']}").status_code == 204
    assert api.admin.get("/hosts").json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "h", "ovsdb_remote": "unix:relative.sock"}, "ovsdb_remote"),
        ({"name": "h", "ovsdb_remote": "tcp:host.example:6640"}, "ovsdb_remote"),
        ({"name": "h", "ovsdb_remote": "tcp:127.0.0.1:99999"}, "ovsdb_remote"),
        ({"name": "h", "ovsdb_remote": "http://127.0.0.1:6640"}, "ovsdb_remote"),
        ({"name": "h", "ovsdb_remote": "unix:/x.sock", "tunnel_ip": "10.0.0.300"}, "tunnel_ip"),
        ({"name": "h", "ovsdb_remote": "unix:/x.sock", "tunnel_ip": "224.0.0.1"}, "tunnel_ip"),
        ({"name": "h", "ovsdb_remote": "unix:/x.sock", "uplink": "a-very-long-ifname"}, "uplink"),
        ({"name": "h", "ovsdb_remote": "unix:/x.sock", "uplink": "eth 1"}, "uplink"),
        ({"name": "h", "ovsdb_remote": "unix:/x.sock", "libvirt_uri": "system"}, "libvirt_uri"),
        ({"name": "h", "ovsdb_remote": "unix:/x.sock", "datapath_id": "0" * 16}, "datapath_id"),
        ({"name": "h"}, "ovsdb_remote"),
        ({"name": ["h"], "ovsdb_remote": "unix:/x.sock"}, "name"),
    ],
)
def test_bad_host_bodies_are_422_naming_the_field(
    api: Any, body: dict[str, Any], field: str
) -> None:
    with api.unchanged():
        problem = api.problem(api.admin.post("/hosts", json=body), 422, field)
        assert any(e["loc"][-1] == field for e in problem["errors"])


def test_host_status_fields_cannot_be_patched(api: Any) -> None:
    host = api.host()
    with api.unchanged():
        for field, value in (("ovsdb_connected", True), ("datapath_id", "0" * 16)):
            api.problem(
                api.admin.patch(f"/hosts/{host['id']}", json={field: value}),
                422,
                field,
                "cannot be changed",
            )
        api.problem(api.admin.patch(f"/hosts/{host['id']}", json={"name": None}), 422, "name")


def test_host_name_and_tunnel_ip_are_unique(api: Any) -> None:
    api.host("h1", tunnel_ip="192.0.2.1")
    h2 = api.host("h2", tunnel_ip="192.0.2.2")
    with api.unchanged():
        api.problem(api.admin.post("/hosts", json={"name": "h1", "ovsdb_remote": "unix:/a"}), 409)
        api.problem(
            api.admin.post(
                "/hosts", json={"name": "h3", "ovsdb_remote": "unix:/a", "tunnel_ip": "192.0.2.1"}
            ),
            409,
            "tunnel_ip",
        )
        api.problem(api.admin.patch(f"/hosts/{h2['id']}", json={"tunnel_ip": "192.0.2.1"}), 409)
    # renaming to its own name is no conflict
    assert api.admin.patch(f"/hosts/{h2['id']}", json={"name": "h2"}).status_code == 200


def test_host_with_bound_ports_cannot_be_deleted(api: Any) -> None:
    host = api.host()
    tenant, _ = api.tenant("acme")
    network = api.network(tenant["id"])
    port = api.admin.create(
        "/ports", {"network_id": network["id"], "host_id": host["id"], "interface": "tap0"}
    )
    with api.unchanged():
        api.problem(api.admin.delete(f"/hosts/{host['id']}"), 409, "bound port")
    api.admin.patch(f"/ports/{port['id']}", json={"host_id": None})
    assert api.admin.delete(f"/hosts/{host['id']}").status_code == 204
