"""Scoping in the store itself, whatever route calls it: a tenant actor fails closed."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import Forbidden, NotFound
from api.store import resources
from api.store.db import Database
from api.store.principals import Principal

pytestmark = pytest.mark.api


@pytest.fixture
def database(api: Any) -> Database:
    found: Database = api.client.app.state.database
    return found


def _as(actor: Principal, operation: str, resource: Any, item_id: str, session: Any) -> Any:
    if operation == "get":
        return resources.get(session, resource, actor=actor, id=item_id)
    if operation == "update":
        changes = {"name": "mine"}
        return resources.update(session, resource, actor=actor, id=item_id, changes=changes)
    return resources.delete(session, resource, actor=actor, id=item_id)


@pytest.mark.parametrize("operation", ["get", "update", "delete"])
def test_another_tenants_objects_are_not_found_without_naming_it(
    api: Any, database: Database, operation: str
) -> None:
    owner, _ = api.tenant("owner")
    other, _ = api.tenant("other")
    network = api.network(owner["id"], "secret-net", cidr="10.0.0.0/24")
    port = api.admin.create("/ports", {"network_id": network["id"]})
    intruder = Principal(name="other-token", tenant_id=other["id"])
    for resource, item in ((resources.NETWORKS, network), (resources.PORTS, port)):
        with pytest.raises(NotFound) as refused, database.write() as session:
            _as(intruder, operation, resource, item["id"], session)
        assert owner["id"] not in refused.value.detail
        assert "owner" not in refused.value.detail
    with database.read() as session:
        assert resources.find(session, resources.TENANTS, actor=intruder, id=owner["id"]) is None
        assert resources.get_page(session, resources.NETWORKS, actor=intruder).total == 0
    assert api.admin.get(f"/networks/{network['id']}").json()["name"] == "secret-net"


def test_admin_only_services_refuse_a_tenant_actor(api: Any, database: Database) -> None:
    tenant, _ = api.tenant("acme")
    host = api.host("h1")
    actor = Principal(name="acme-token", tenant_id=tenant["id"])
    with pytest.raises(Forbidden), database.write() as session:
        resources.create_tenant(session, actor=actor, name="another")
    with pytest.raises(Forbidden), database.write() as session:
        resources.create_host(session, actor=actor, name="h2", ovsdb_remote="tcp:192.0.2.2:6640")
    with pytest.raises(Forbidden), database.write() as session:
        resources.get(session, resources.HOSTS, actor=actor, id=host["id"])
    with pytest.raises(Forbidden), database.write() as session:
        resources.update(
            session, resources.TENANTS, actor=actor, id=tenant["id"], changes={"name": "x"}
        )
    assert api.admin.get(f"/tenants/{tenant['id']}").json()["name"] == "acme"
