"""Fixtures for the API's functional tests: a real database per test, the real app.

Every test gets a fresh SQLite file under tmp_path; when OVS_FABRIC_TEST_POSTGRES_URL
names a PostgreSQL server (a maintenance database such as
postgresql+psycopg://user@127.0.0.1/postgres), the database fixtures are also
generated for PostgreSQL, each test in its own newly created database.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.config import Settings
from api.main import create_app
from api.paths import API_PREFIX
from api.store.db import Database, upgrade_database

# Starlette asks for httpx2 in its test client; httpx is what the project ships.
warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient", category=Warning)
from fastapi.testclient import TestClient  # noqa: E402

ADMIN_TOKEN = "test-admin-token"
POSTGRES_ENV = "OVS_FABRIC_TEST_POSTGRES_URL"
DATABASE_KINDS = ["sqlite"] + (["postgresql"] if os.environ.get(POSTGRES_ENV) else [])


def _postgres_database() -> Iterator[str]:
    server = make_url(os.environ[POSTGRES_ENV])
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    name = f"ovsf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=DATABASE_KINDS)
def api_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fabric.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def database(api_database_url: str) -> Iterator[Database]:
    """The store on a migrated database of each kind."""
    upgrade_database(api_database_url)
    database = Database(api_database_url)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def api_settings(api_database_url: str) -> Settings:
    return Settings(
        database_url=api_database_url,
        admin_token=ADMIN_TOKEN,
        controller_enabled=False,
        libvirt_enabled=False,
    )


@pytest.fixture
def api_settings_factory(api_database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": api_database_url,
            "admin_token": ADMIN_TOKEN,
            "controller_enabled": False,
            "libvirt_enabled": False,
        }
        values.update(overrides)
        return Settings(**values)

    return make


class Caller:
    """One bearer token against the app; paths are relative to API_PREFIX."""

    def __init__(self, client: TestClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        return self.client.request(method, f"{API_PREFIX}{path}", headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(path, json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def revision(self) -> int:
        value: int = self.get("/revision").json()["revision"]
        return value


class ApiHarness:
    """The app under test: an admin caller, helpers to build tenants and networks, and the
    checks every test makes (an RFC 9457 problem; nothing changed)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.admin = Caller(client, ADMIN_TOKEN)

    def caller(self, token: str | None) -> Caller:
        return Caller(self.client, token)

    def tenant(self, name: str) -> tuple[dict[str, Any], Caller]:
        """A new tenant and a caller holding one of its tokens."""
        tenant = self.admin.create("/tenants", {"name": name})
        token = self.admin.create(f"/tenants/{tenant['id']}/tokens", {"name": f"{name}-token"})
        return tenant, Caller(self.client, token["token"])

    def network(self, tenant_id: str, name: str = "net", **fields: Any) -> dict[str, Any]:
        body = {"tenant_id": tenant_id, "name": name, "type": "vxlan", **fields}
        return self.admin.create("/networks", body)

    def host(self, name: str = "host-1", **fields: Any) -> dict[str, Any]:
        body = {"name": name, "ovsdb_remote": f"unix:/run/ovs-fabric/{name}/db.sock", **fields}
        return self.admin.create("/hosts", body)

    def state(self) -> dict[str, Any]:
        """Everything the admin can see, revision included: equal states mean nothing changed."""
        response = self.admin.get("/topology")
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        return state

    @contextlib.contextmanager
    def unchanged(self) -> Iterator[None]:
        """Assert that the fabric did not change inside the block."""
        before = self.state()
        yield
        assert self.state() == before

    @staticmethod
    def problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
        """`response` is an RFC 9457 problem with `status` whose detail contains `fragments`."""
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body: dict[str, Any] = response.json()
        assert body["status"] == status
        assert {"type", "title", "status", "detail"} <= body.keys()
        for fragment in fragments:
            assert fragment in body["detail"], (fragment, body["detail"])
        return body


@pytest.fixture
def api_factory() -> Iterator[Callable[[Settings], ApiHarness]]:
    clients: list[TestClient] = []

    def make(settings: Settings) -> ApiHarness:
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return ApiHarness(client)

    try:
        yield make
    finally:
        for client in reversed(clients):
            client.__exit__(None, None, None)


@pytest.fixture
def api(api_settings: Settings, api_factory: Callable[[Settings], ApiHarness]) -> ApiHarness:
    return api_factory(api_settings)


@pytest.fixture
def net(api: ApiHarness) -> dict[str, Any]:
    """Tenant "acme"'s network "web", 10.0.0.0/24 with gateway 10.0.0.1."""
    tenant, _ = api.tenant("acme")
    return api.network(tenant["id"], "web", cidr="10.0.0.0/24", gateway="10.0.0.1")
