"""The API when it cannot serve: the database is gone, or the service is stopping."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from api.config import Settings
from api.paths import HEALTH_PATH
from tests.api.conftest import ADMIN_TOKEN, ApiHarness
from tests.support.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.api


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def test_requests_needing_a_stopped_database_get_503_and_work_once_it_is_back(
    postgres: PostgresServer, api_factory: Callable[[Settings], ApiHarness]
) -> None:
    api = api_factory(
        Settings(
            database_url=postgres.url,
            admin_token=ADMIN_TOKEN,
            controller_enabled=False,
            libvirt_enabled=False,
        )
    )
    tenant = api.admin.create("/tenants", {"name": "before"})
    postgres.stop()

    for response in (
        api.admin.get("/tenants"),
        api.admin.get(f"/tenants/{tenant['id']}"),
        api.admin.post("/tenants", json={"name": "during"}),
        api.client.get(HEALTH_PATH),
    ):
        body = api.problem(response, 503, "database")
        assert "Traceback" not in response.text and "127.0.0.1" not in body["detail"], body
    assert api.admin.get("/tenants").headers["retry-after"].isdigit()

    postgres.start()
    assert api.client.get(HEALTH_PATH).status_code == 200
    names = [t["name"] for t in api.admin.get("/tenants").json()["items"]]
    assert names == ["before"]


def test_a_waiting_get_answers_at_once_when_the_service_is_stopping(
    api: ApiHarness, net: dict[str, Any]
) -> None:
    port = api.admin.create("/ports", {"network_id": net["id"], "name": "p"})
    api.client.app.state.shutting_down.set()  # what `ovs-fabric serve` does on SIGTERM
    started = time.monotonic()
    response = api.admin.get(f"/ports/{port['id']}", params={"wait": "active", "timeout": 60})
    assert response.status_code == 200 and response.json()["status"] == "DOWN"
    assert time.monotonic() - started < 30  # not the 60 s it asked to wait
