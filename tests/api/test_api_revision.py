"""The global revision: every change of desired state bumps it once; nothing else does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.model import BackendHealthUpdate, HostStatus, PortStatusUpdate

pytestmark = pytest.mark.api


def test_each_write_bumps_once_and_stamps_the_object(api: Any) -> None:
    assert api.admin.revision() == 0
    tenant, _ = api.tenant("acme")  # the token is not desired state
    assert tenant["revision"] == api.admin.revision() == 1
    host = api.host()
    assert host["revision"] == 2
    net = api.network(tenant["id"], cidr="10.0.0.0/24")
    assert net["revision"] == 3
    port = api.admin.create(
        "/ports", {"network_id": net["id"], "host_id": host["id"], "interface": "t0"}
    )
    assert port["revision"] == 4
    lb = api.admin.create(
        "/load-balancers",
        {"network_id": net["id"], "name": "lb", "vip": "10.0.0.9", "protocol": "tcp", "port": 80},
    )
    assert lb["revision"] == 5
    patched = api.admin.patch(
        f"/load-balancers/{lb['id']}", json={"backends": [{"ip": "10.0.0.8", "port": 80}]}
    )
    assert patched.json()["revision"] == 6
    assert api.admin.get(f"/networks/{net['id']}").json()["revision"] == 3  # untouched
    api.admin.delete(f"/load-balancers/{lb['id']}")
    assert api.admin.revision() == 7


def test_reads_refusals_and_empty_patches_do_not_bump(api: Any) -> None:
    tenant, caller = api.tenant("acme")
    net = api.network(tenant["id"])
    start = api.admin.revision()
    api.admin.get("/topology")
    api.admin.get("/networks")
    api.problem(
        api.admin.post(
            "/networks", json={"tenant_id": tenant["id"], "name": net["name"], "type": "vlan"}
        ),
        409,
    )
    api.problem(caller.delete(f"/tenants/{tenant['id']}"), 403)
    assert api.admin.patch(f"/networks/{net['id']}", json={}).status_code == 200
    assert (
        api.admin.patch(f"/networks/{net['id']}", json={"name": net["name"]}).json()["revision"]
        == net["revision"]
    )
    assert api.admin.revision() == start


def test_controller_status_writes_do_not_bump(api: Any) -> None:
    tenant, _ = api.tenant("acme")
    host = api.host()
    net = api.network(tenant["id"], cidr="10.0.0.0/24")
    port = api.admin.create(
        "/ports", {"network_id": net["id"], "host_id": host["id"], "interface": "t0"}
    )
    lb = api.admin.create(
        "/load-balancers",
        {
            "network_id": net["id"],
            "name": "lb",
            "vip": "10.0.0.9",
            "protocol": "tcp",
            "port": 80,
            "backends": [{"ip": "10.0.0.8", "port": 80}],
        },
    )
    before = api.state()
    store = api.client.app.state.store
    now = datetime.now(UTC)
    store.record_host_status(
        HostStatus(
            host_id=host["id"],
            ovsdb_connected=True,
            openflow_connected=True,
            datapath_id="00000000000000aa",
        )
    )
    store.record_port_status(
        [PortStatusUpdate(port_id=port["id"], status="ACTIVE", host_id=host["id"], at=now)]
    )
    store.record_backend_health(
        [
            BackendHealthUpdate(
                load_balancer_id=lb["id"], ip="10.0.0.8", port=80, healthy=False, at=now
            )
        ]
    )
    after = api.state()
    assert after["revision"] == before["revision"] == store.current_revision()
    host_after = after["hosts"][0]
    assert (host_after["ovsdb_connected"], host_after["datapath_id"]) == (True, "00000000000000aa")
    assert (
        host_after["revision"] == host["revision"]
        and host_after["updated_at"] == host["updated_at"]
    )
    assert (
        after["ports"][0]["status"] == "ACTIVE"
        and after["ports"][0]["revision"] == port["revision"]
    )
    assert after["load_balancers"][0]["backends"][0]["healthy"] is False
    assert after["load_balancers"][0]["revision"] == lb["revision"]
