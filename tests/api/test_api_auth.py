"""Bearer tokens: who may call what, and the admin token bootstrap."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from api.config import Settings
from api.store.db import Database
from api.store.models import ApiToken

pytestmark = pytest.mark.api

ENDPOINTS = [
    ("GET", "/hosts"),
    ("POST", "/hosts"),
    ("GET", "/tenants"),
    ("POST", "/tenants"),
    ("GET", "/networks"),
    ("POST", "/networks"),
    ("GET", "/ports"),
    ("GET", "/ports/00000000-0000-0000-0000-000000000000"),
    ("PATCH", "/ports/00000000-0000-0000-0000-000000000000"),
    ("DELETE", "/networks/00000000-0000-0000-0000-000000000000"),
    ("GET", "/load-balancers"),
    ("GET", "/topology"),
    ("GET", "/revision"),
    ("POST", "/tenants/00000000-0000-0000-0000-000000000000/tokens"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_token_is_401_problem(api: Any, method: str, path: str) -> None:
    response = api.caller(None).request(method, path, json={})
    api.problem(response, 401, "missing bearer token")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_unknown_token_is_401_problem(api: Any, method: str, path: str) -> None:
    api.problem(api.caller("not-a-token").request(method, path, json={}), 401, "unknown")


def test_basic_auth_is_not_a_bearer_token(api: Any) -> None:
    response = api.client.get("/api/v1/networks", headers={"Authorization": "Basic YWRtaW46eA=="})
    api.problem(response, 401)


def test_health_needs_no_token(api: Any) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/hosts", None),
        ("POST", "/hosts", {"name": "h", "ovsdb_remote": "unix:/x.sock"}),
        ("POST", "/tenants", {"name": "other"}),
        ("PATCH", "/tenants/{own}", {"description": "mine"}),
        ("DELETE", "/tenants/{own}", None),
        ("POST", "/tenants/{own}/tokens", {"name": "more"}),
    ],
)
def test_tenant_token_on_admin_endpoints_is_403(
    api: Any, method: str, path: str, body: dict[str, Any] | None
) -> None:
    tenant, caller = api.tenant("acme")
    api.host("h-existing")
    with api.unchanged():
        response = caller.request(method, path.format(own=tenant["id"]), json=body)
        api.problem(response, 403, "admin token")


def test_host_detail_is_admin_only_too(api: Any) -> None:
    host = api.host()
    _tenant, caller = api.tenant("acme")
    api.problem(caller.get(f"/hosts/{host['id']}"), 403)
    api.problem(caller.delete(f"/hosts/{host['id']}"), 403)
    assert api.admin.get(f"/hosts/{host['id']}").status_code == 200


def test_tenant_sees_only_itself(api: Any) -> None:
    acme, acme_caller = api.tenant("acme")
    globex, _ = api.tenant("globex")
    listing = acme_caller.get("/tenants").json()
    assert [t["id"] for t in listing["items"]] == [acme["id"]] and listing["total"] == 1
    assert acme_caller.get(f"/tenants/{acme['id']}").json()["name"] == "acme"
    api.problem(acme_caller.get(f"/tenants/{globex['id']}"), 404)
    assert api.admin.get("/tenants").json()["total"] == 2


def test_tokens_are_stored_only_as_hashes(api: Any, api_settings: Settings) -> None:
    tenant, _ = api.tenant("acme")
    created = api.admin.create(f"/tenants/{tenant['id']}/tokens", {"name": "ci"})
    assert created["tenant_id"] == tenant["id"] and created["name"] == "ci"
    database = Database(api_settings.database_url)
    try:
        with database.read() as session:
            stored = {row.token_hash for row in session.scalars(select(ApiToken))}
    finally:
        database.dispose()
    assert created["token"] not in stored
    assert hashlib.sha256(created["token"].encode()).hexdigest() in stored
    # token creation is not a change of desired state
    assert api.admin.revision() == 1


def test_token_for_unknown_tenant_is_404(api: Any) -> None:
    response = api.admin.post(
        "/tenants/00000000-0000-0000-0000-000000000000/tokens", json={"name": "x"}
    )
    api.problem(response, 404, "tenant")


def test_generated_admin_token_is_printed_once_and_works(
    api_factory: Callable[[Settings], Any],
    api_settings_factory: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = api_settings_factory(admin_token=None)
    first = api_factory(settings)
    printed = capsys.readouterr().out
    assert "generated admin token" in printed
    token = printed.strip().rsplit(" ", 1)[-1]
    assert first.caller(token).get("/hosts").status_code == 200
    assert first.caller("test-admin-token").get("/hosts").status_code == 401

    second = api_factory(settings)  # a restart on the same database
    assert "admin token" not in capsys.readouterr().out
    assert second.caller(token).get("/hosts").status_code == 200


def test_configured_admin_token_is_registered_without_printing(
    api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert api.admin.get("/hosts").status_code == 200
    assert "admin token" not in capsys.readouterr().out


def test_deleting_a_tenant_revokes_its_tokens(api: Any) -> None:
    tenant, caller = api.tenant("acme")
    assert caller.get("/networks").status_code == 200
    assert api.admin.delete(f"/tenants/{tenant['id']}").status_code == 204
    api.problem(caller.get("/networks"), 401)
