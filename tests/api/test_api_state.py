"""SqlStateStore (the controller's view) and the port helpers the libvirt watcher uses."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from api.errors import Conflict, Invalid
from api.store import resources
from api.store.db import Database, mark_changed
from api.store.models import Tenant
from api.store.principals import LIBVIRT_WATCHER
from api.store.snapshot import SqlStateStore
from controller.core.model import (
    BackendSpec,
    HealthCheckSpec,
    HostSpec,
    NetworkSpec,
    PortSpec,
    PortStatusUpdate,
    StateStore,
)

pytestmark = pytest.mark.api


@pytest.fixture
def store(api: Any) -> SqlStateStore:
    found: SqlStateStore = api.client.app.state.store
    return found


@pytest.fixture
def database(api: Any) -> Database:
    found: Database = api.client.app.state.database
    return found


def test_store_satisfies_the_controller_protocol(store: SqlStateStore) -> None:
    satisfied: StateStore = store
    assert satisfied.current_revision() == 0
    assert satisfied.load_snapshot().hosts == ()


def test_snapshot_holds_the_whole_desired_state(api: Any, store: SqlStateStore) -> None:
    tenant, _ = api.tenant("acme")
    host = api.host("h1", tunnel_ip="192.0.2.1", uplink="eth1", libvirt_uri="qemu:///system")
    bare_host = api.host("h2")
    vlan = api.network(tenant["id"], "v", type="vlan", cidr="10.0.0.0/24", gateway="10.0.0.1")
    vxlan = api.network(tenant["id"], "x", type="vxlan")
    bound = api.admin.create(
        "/ports",
        {
            "network_id": vlan["id"],
            "mac": "02:00:00:00:00:01",
            "ips": ["10.0.0.5", "10.0.0.6"],
            "host_id": host["id"],
            "interface": "tap0",
            "vm_id": "vm-1",
        },
    )
    unbound = api.admin.create("/ports", {"network_id": vxlan["id"], "mac": "02:00:00:00:00:02"})
    lb = api.admin.create(
        "/load-balancers",
        {
            "network_id": vlan["id"],
            "name": "lb",
            "vip": "10.0.0.100",
            "protocol": "udp",
            "port": 53,
            "health_check": {"interval": 3, "timeout": 0.5, "rise": 1, "fall": 4},
            "backends": [
                {"port_id": bound["id"], "port": 5353, "weight": 7},
                {"ip": "10.0.0.9", "port": 53},
            ],
        },
    )
    quiet = api.admin.create(
        "/load-balancers",
        {
            "network_id": vlan["id"],
            "name": "quiet",
            "vip": "10.0.0.100",
            "protocol": "tcp",
            "port": 53,
            "health_check": {"enabled": False},
        },
    )

    snapshot = store.load_snapshot()
    assert snapshot.revision == store.current_revision() == api.admin.revision()
    assert snapshot.hosts == (
        HostSpec(
            id=host["id"],
            name="h1",
            ovsdb_remote=host["ovsdb_remote"],
            tunnel_ip="192.0.2.1",
            uplink="eth1",
            libvirt_uri="qemu:///system",
        ),
        HostSpec(id=bare_host["id"], name="h2", ovsdb_remote=bare_host["ovsdb_remote"]),
    )
    assert snapshot.host(host["id"]) == snapshot.hosts[0]
    assert snapshot.networks == (
        NetworkSpec(
            id=vlan["id"],
            tenant_id=tenant["id"],
            name="v",
            type="vlan",
            segmentation_id=1,
            cidr="10.0.0.0/24",
            gateway="10.0.0.1",
        ),
        NetworkSpec(
            id=vxlan["id"],
            tenant_id=tenant["id"],
            name="x",
            type="vxlan",
            segmentation_id=1,
            mtu=1450,  # the default underlay's 1500 less VXLAN's 50
        ),
    )
    assert snapshot.ports == (
        PortSpec(
            id=bound["id"],
            network_id=vlan["id"],
            mac="02:00:00:00:00:01",
            ips=("10.0.0.5", "10.0.0.6"),
            host_id=host["id"],
            interface="tap0",
            vm_id="vm-1",
        ),
        PortSpec(id=unbound["id"], network_id=vxlan["id"], mac="02:00:00:00:00:02"),
    )
    first, second = snapshot.load_balancers
    assert (first.id, first.network_id, first.vip, first.protocol, first.port) == (
        lb["id"],
        vlan["id"],
        "10.0.0.100",
        "udp",
        53,
    )
    assert first.backends == (
        BackendSpec(ip="10.0.0.5", port=5353, weight=7, healthy=True, port_id=bound["id"]),
        BackendSpec(ip="10.0.0.9", port=53, weight=1, healthy=True, port_id=None),
    )
    assert first.health_check == HealthCheckSpec(interval=3.0, timeout=0.5, rise=1, fall=4)
    assert second.id == quiet["id"] and second.health_check is None and second.backends == ()


def bound_port(api: Any) -> tuple[dict[str, Any], dict[str, Any], datetime]:
    tenant, _ = api.tenant("acme")
    host = api.host("h1")
    net = api.network(tenant["id"])
    port = api.admin.create(
        "/ports", {"network_id": net["id"], "host_id": host["id"], "interface": "tap0"}
    )
    return port, host, datetime.fromisoformat(port["binding"]["bound_at"])


def test_activation_seconds_measure_binding_to_confirmation(api: Any, store: SqlStateStore) -> None:
    port, host, bound_at = bound_port(api)
    store.record_port_status(
        [PortStatusUpdate(port["id"], "ACTIVE", host["id"], bound_at + timedelta(seconds=0.25))]
    )
    active = api.admin.get(f"/ports/{port['id']}").json()
    assert active["status"] == "ACTIVE" and active["activation_seconds"] == pytest.approx(0.25)

    # a repeated report of the same status changes nothing (not even status_at)
    store.record_port_status(
        [PortStatusUpdate(port["id"], "ACTIVE", host["id"], bound_at + timedelta(seconds=9))]
    )
    assert api.admin.get(f"/ports/{port['id']}").json() == active

    store.record_port_status(
        [PortStatusUpdate(port["id"], "ERROR", host["id"], bound_at + timedelta(seconds=10))]
    )
    failed = api.admin.get(f"/ports/{port['id']}").json()
    assert failed["status"] == "ERROR" and failed["activation_seconds"] is None
    assert datetime.fromisoformat(failed["status_at"]) == bound_at + timedelta(seconds=10)


def test_stale_reports_are_ignored(api: Any, store: SqlStateStore) -> None:
    port, host, bound_at = bound_port(api)
    other = api.host("h2")
    later = bound_at + timedelta(seconds=1)
    # from a host the port is not bound to
    store.record_port_status([PortStatusUpdate(port["id"], "ACTIVE", other["id"], later)])
    # about an earlier binding
    store.record_port_status(
        [PortStatusUpdate(port["id"], "ACTIVE", host["id"], bound_at - timedelta(seconds=1))]
    )
    # for a port that does not exist
    store.record_port_status(
        [PortStatusUpdate("00000000-0000-0000-0000-000000000000", "ACTIVE", host["id"], later)]
    )
    assert api.admin.get(f"/ports/{port['id']}").json()["status"] == "DOWN"

    # rebinding resets the status: the old host's confirmation no longer counts
    store.record_port_status([PortStatusUpdate(port["id"], "ACTIVE", host["id"], later)])
    moved = api.admin.patch(f"/ports/{port['id']}", json={"host_id": other["id"]}).json()
    assert moved["status"] == "DOWN" and moved["activation_seconds"] is None
    store.record_port_status([PortStatusUpdate(port["id"], "DOWN", host["id"], later)])
    store.record_port_status(
        [
            PortStatusUpdate(
                port["id"],
                "ACTIVE",
                host["id"],
                datetime.fromisoformat(moved["binding"]["bound_at"]) + timedelta(seconds=1),
            )
        ]
    )
    assert api.admin.get(f"/ports/{port['id']}").json()["status"] == "DOWN"


def test_unbound_port_status_is_reported_with_no_host(api: Any, store: SqlStateStore) -> None:
    tenant, _ = api.tenant("acme")
    net = api.network(tenant["id"])
    port = api.admin.create("/ports", {"network_id": net["id"]})
    created = datetime.fromisoformat(port["created_at"])
    store.record_port_status([PortStatusUpdate(port["id"], "ERROR", None, created)])
    assert api.admin.get(f"/ports/{port['id']}").json()["status"] == "ERROR"


def test_watcher_helpers_bump_the_revision(
    api: Any, database: Database, store: SqlStateStore
) -> None:
    tenant, _ = api.tenant("acme")
    host = api.host("h1")
    net = api.network(tenant["id"], cidr="10.0.0.0/24")
    start = store.current_revision()

    with database.write() as session:
        port = resources.create_port(
            session,
            actor=LIBVIRT_WATCHER,
            network_id=net["id"],
            mac="02:AB:00:00:00:01",
            origin="libvirt",
            vm_id="vm-1",
        )
        port_id = port.id
    assert store.current_revision() == start + 1

    with database.read() as session:
        found = resources.find_port_by_mac(session, actor=LIBVIRT_WATCHER, mac="02:ab:00:00:00:01")
        assert found is not None and found.id == port_id and found.origin == "libvirt"
        assert found.ips == ["10.0.0.1"]
        assert resources.find_port_by_mac(session, actor=LIBVIRT_WATCHER, mac="not-a-mac") is None
        assert resources.find_port(session, actor=LIBVIRT_WATCHER, port_id=port_id) is not None
        assert [
            p.id for p in resources.ports_of_vm(session, actor=LIBVIRT_WATCHER, vm_id="vm-1")
        ] == [port_id]

    with database.write() as session:
        resources.bind_port(
            session,
            actor=LIBVIRT_WATCHER,
            port_id=port_id,
            host_id=host["id"],
            interface="vnet0",
            vm_id="vm-1",
        )
    bound = api.admin.get(f"/ports/{port_id}").json()
    assert bound["binding"]["interface"] == "vnet0" and bound["revision"] == start + 2

    with database.write() as session:
        resources.unbind_port(session, actor=LIBVIRT_WATCHER, port_id=port_id)
    unbound = api.admin.get(f"/ports/{port_id}").json()
    assert unbound["binding"] == {
        "host_id": None,
        "interface": None,
        "vm_id": None,
        "bound_at": unbound["binding"]["bound_at"],
    }

    with database.write() as session:
        resources.delete_port(session, actor=LIBVIRT_WATCHER, port_id=port_id)
    assert store.current_revision() == start + 4
    assert api.admin.get(f"/ports/{port_id}").status_code == 404


def test_watcher_helpers_enforce_the_same_rules(
    api: Any, database: Database, store: SqlStateStore
) -> None:
    tenant, _ = api.tenant("acme")
    net = api.network(tenant["id"])
    api.admin.create("/ports", {"network_id": net["id"], "mac": "02:00:00:00:00:01"})
    with api.unchanged():
        with pytest.raises(Conflict), database.write() as session:
            resources.create_port(
                session,
                actor=LIBVIRT_WATCHER,
                network_id=net["id"],
                mac="02:00:00:00:00:01",
                origin="libvirt",
            )
        with pytest.raises(Invalid), database.write() as session:
            resources.create_port(
                session,
                actor=LIBVIRT_WATCHER,
                network_id="00000000-0000-0000-0000-000000000000",
                mac="02:00:00:00:00:03",
            )


def test_desired_state_cannot_change_outside_a_write_transaction(
    api: Any, database: Database
) -> None:
    api.tenant("acme")
    with (
        pytest.raises(RuntimeError, match=r"outside Database\.write"),
        database.unversioned_write() as session,
    ):
        resources.create_tenant(session, actor=LIBVIRT_WATCHER, name="sneaky")
    assert api.admin.get("/tenants").json()["total"] == 1


def test_core_statements_count_only_when_marked(api: Any, database: Database) -> None:
    tenant, _ = api.tenant("acme")
    start = api.admin.revision()
    with database.write() as session:
        session.execute(update(Tenant).values(description="unmarked"))
    assert api.admin.get(f"/tenants/{tenant['id']}").json()["description"] == ""
    assert api.admin.revision() == start
    with database.write() as session:
        session.execute(update(Tenant).values(description="marked"))
        mark_changed(session)
    assert api.admin.get(f"/tenants/{tenant['id']}").json()["description"] == "marked"
    assert api.admin.revision() == start + 1
