"""Ports written and read as records (resources.add_port and port_records, api/rest/bodies.py)
answer byte for byte what the ORM objects through `PortOut` answered."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from api.rest.schemas import Page, PortOut
from api.store import resources
from api.store.models import Port
from api.store.principals import Principal
from controller.core.model import PortStatusUpdate

pytestmark = pytest.mark.api


def _orm_page(api: Any, actor: Principal, where: dict[str, Any], limit: int, offset: int) -> bytes:
    """The page as the generic route built it before: ORM rows, each validated by PortOut."""
    with api.client.app.state.database.read() as session:
        found = resources.get_page(
            session, resources.PORTS, actor=actor, where=where, limit=limit, offset=offset
        )
        return Page.of(found, PortOut.of).model_dump_json(by_alias=True).encode()


def test_port_pages_are_the_orm_pages_byte_for_byte(api: Any) -> None:
    tenant, tenant_caller = api.tenant("acme")
    other, other_caller = api.tenant("other")
    host = api.host("h1")
    dual = api.network(tenant["id"], "dual", cidr="10.0.0.0/24", ipv6_cidr="fd00:1::/64")
    plain = api.network(tenant["id"], "plain")
    theirs = api.network(other["id"], "theirs", cidr="10.9.0.0/24")
    bound = api.admin.create(
        "/ports",
        {
            "network_id": dual["id"],
            "name": "web-1",
            "host_id": host["id"],
            "interface": "tap0",
            "vm_id": "vm-1",
            "ips": ["10.0.0.7", "fd00:1::7", "10.0.0.5"],  # stored IPv4s first, by position
        },
    )
    for _ in range(4):
        tenant_caller.create("/ports", {"network_id": dual["id"]})
    tenant_caller.create("/ports", {"network_id": plain["id"], "name": "no-ip"})
    other_caller.create("/ports", {"network_id": theirs["id"]})
    # A status the controller reported: status_at and a float activation_seconds.
    api.client.app.state.store.record_port_status(
        [
            PortStatusUpdate(
                port_id=bound["id"],
                status="ACTIVE",
                host_id=host["id"],
                at=datetime.fromisoformat(bound["binding"]["bound_at"])
                + timedelta(seconds=0.123457),
            )
        ]
    )
    admin = Principal(name="admin", tenant_id=None)
    cases = [
        (api.admin, admin, {}, 100, 0),
        (api.admin, admin, {"network_id": dual["id"]}, 2, 1),
        (api.admin, admin, {"host_id": host["id"], "status": "ACTIVE"}, 100, 0),
        (api.admin, admin, {"vm_id": "vm-1"}, 100, 0),
        (api.admin, admin, {"network_id": theirs["id"]}, 100, 0),
        (tenant_caller, Principal(name="t", tenant_id=tenant["id"]), {}, 3, 0),
        (tenant_caller, Principal(name="t", tenant_id=tenant["id"]), {}, 3, 3),
        # Another tenant's network: an empty page, as before.
        (
            other_caller,
            Principal(name="o", tenant_id=other["id"]),
            {"network_id": dual["id"]},
            9,
            0,
        ),
        (api.admin, admin, {"status": "ERROR"}, 100, 0),
    ]
    for caller, actor, where, limit, offset in cases:
        response = caller.get("/ports", params={**where, "limit": limit, "offset": offset})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.content == _orm_page(api, actor, where, limit, offset), where
    page = api.admin.get("/ports", params={"vm_id": "vm-1"}).json()
    assert page["items"][0]["ips"] == ["10.0.0.7", "10.0.0.5", "fd00:1::7"]
    assert page["items"][0]["activation_seconds"] == pytest.approx(0.123457)


def test_a_created_port_is_answered_as_the_orm_reads_it_back(api: Any) -> None:
    tenant, tenant_caller = api.tenant("acme")
    host = api.host("h1")
    dual = api.network(tenant["id"], "dual", cidr="10.0.0.0/24", ipv6_cidr="fd00:1::/64")
    plain = api.network(tenant["id"], "plain")
    bodies = [
        (api.admin, {"network_id": dual["id"], "host_id": host["id"], "interface": "tap0"}),
        (api.admin, {"network_id": dual["id"], "ips": ["fd00:1::9", "10.0.0.9"], "vm_id": "v"}),
        (tenant_caller, {"network_id": dual["id"], "name": "web", "mac": "02:AA:00:00:00:01"}),
        (tenant_caller, {"network_id": plain["id"]}),
    ]
    for caller, body in bodies:
        response = caller.post("/ports", json=body)
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        port_id = response.json()["id"]
        assert response.headers["location"] == f"/api/v1/ports/{port_id}"
        with api.client.app.state.database.read() as session:
            stored = PortOut.of(session.get_one(Port, port_id))
        assert response.content == stored.model_dump_json(by_alias=True).encode(), body
