"""`ovs-fabric db`: the database schema (Alembic migrations)."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.common import local_settings

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the schema (default: to the newest revision)."""
    from api.store.db import schema_revision, upgrade_database

    settings = local_settings()
    upgrade_database(settings.database_url, revision)
    typer.echo(f"database at revision {schema_revision(settings.database_url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. 'base' or '-1'.")],
) -> None:
    """Downgrade the schema to REVISION."""
    from api.store.db import downgrade_database, schema_revision

    settings = local_settings()
    downgrade_database(settings.database_url, revision)
    typer.echo(f"database at revision {schema_revision(settings.database_url) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and the newest one available."""
    from api.store.db import head_revision, schema_revision

    settings = local_settings()
    current = schema_revision(settings.database_url) or "base"
    typer.echo(f"current: {current}  head: {head_revision(settings.database_url)}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
