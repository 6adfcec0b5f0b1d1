"""Alembic owns the schema: reversible, and identical to what the models declare."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect, select, text

from api.config import Settings
from api.store.db import (
    downgrade_database,
    head_revision,
    make_engine,
    schema_revision,
    upgrade_database,
)
from api.store.models import Base

pytestmark = pytest.mark.api

TABLES = {
    "fabric_revision",
    "hosts",
    "tenants",
    "networks",
    "ports",
    "port_ips",
    "load_balancers",
    "lb_backends",
    "api_tokens",
    "controller_replicas",
    "switch_masters",
    "deleted_rows",
    "address_cursors",
}


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def schema_diff(url: str, metadata: MetaData) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_to_base_and_upgrade_again(api_database_url: str) -> None:
    assert schema_revision(api_database_url) is None
    upgrade_database(api_database_url)
    head = head_revision(api_database_url)
    assert head is not None and schema_revision(api_database_url) == head
    assert tables(api_database_url) == TABLES

    engine = make_engine(api_database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id, value FROM fabric_revision")).all() == [(1, 0)]
    engine.dispose()

    downgrade_database(api_database_url, "base")
    assert schema_revision(api_database_url) is None
    assert tables(api_database_url) == set()

    upgrade_database(api_database_url)
    assert tables(api_database_url) == TABLES
    upgrade_database(api_database_url)  # idempotent
    assert schema_revision(api_database_url) == head


def test_a_populated_database_migrates_down_and_up_keeping_its_rows(
    api: Any, api_database_url: str
) -> None:
    # SQLite rebuilds a table to alter it: with rows referencing it (ports ->
    # networks) that failed on "FOREIGN KEY constraint failed" at DROP TABLE.
    _tenant, caller = api.tenant("t")
    network = caller.create("/networks", {"name": "n", "type": "vlan", "cidr": "10.0.0.0/24"})
    caller.create("/ports", {"network_id": network["id"]})
    before = api.state()
    downgrade_database(api_database_url, "0004")
    upgrade_database(api_database_url)
    assert api.state() == before


def test_migrations_match_the_models(api_database_url: str) -> None:
    upgrade_database(api_database_url)
    assert schema_diff(api_database_url, Base.metadata) == []


def test_the_comparison_notices_a_drift(api_database_url: str) -> None:
    """Guards the test above: a model change without a migration must show up."""
    upgrade_database(api_database_url)
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["hosts"].append_column(Column("rack", Integer, nullable=True))
    diff = schema_diff(api_database_url, drifted)
    assert any("rack" in repr(change) for change in diff), diff


def test_the_service_migrates_an_empty_database_on_start(
    api_settings: Settings, api_factory: Callable[[Settings], Any]
) -> None:
    assert schema_revision(api_settings.database_url) is None
    api = api_factory(api_settings)
    assert schema_revision(api_settings.database_url) == head_revision(api_settings.database_url)
    assert api.client.get("/healthz").json() == {"status": "ok"}


def test_sqlite_database_gets_wal_foreign_keys_and_its_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'dir' / 'fabric.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000
            # an answered write survives a power loss: synced at commit (2 = FULL)
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 2
            assert connection.execute(select(text("1"))).scalar() == 1
    finally:
        engine.dispose()
    assert (tmp_path / "deep" / "dir" / "fabric.db").exists()


def test_health_reports_an_unusable_database(
    api_settings: Settings, api_factory: Callable[[Settings], Any]
) -> None:
    api = api_factory(api_settings)
    assert api.client.get("/healthz").status_code == 200
    downgrade_database(api_settings.database_url, "base")
    response = api.client.get("/healthz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "database unreachable" in response.json()["detail"]
