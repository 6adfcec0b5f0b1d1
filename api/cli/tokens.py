"""`ovs-fabric token`: API bearer tokens, straight in the service's database.

These work on the database, not over the API: they are how the first admin token
is made and how a lost or leaked one is revoked when no other token is at hand.
Over the API the same is `GET/DELETE /api/v1/tokens` (admin) and
`/api/v1/tenants/{id}/tokens` (admin, or the tenant its own).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli.common import CliError, local_settings
from api.store.db import Database, upgrade_database

token_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)

TenantOption = Annotated[
    str | None, typer.Option(help="Tenant id; without it, the admin tokens.")
]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="A label for the token.")],
    tenant: TenantOption = None,
    expires_at: Annotated[
        datetime | None,
        typer.Option(
            "--expires-at",
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
            help="When the token stops working (UTC unless an offset is given); default never.",
        ),
    ] = None,
) -> None:
    """Create a token and print it (it is shown only once)."""
    from api.store.principals import CLI, create_token

    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    with _database() as database, database.unversioned_write() as session:
        _row, token = create_token(
            session, actor=CLI, name=name, tenant_id=tenant, expires_at=expires_at
        )
    typer.echo(token)


@token_app.command("list")
def token_list(tenant: TenantOption = None) -> None:
    """The admin tokens, or a tenant's: ids, names and expiry, never the tokens."""
    from api.store.principals import CLI, list_tokens

    with _database() as database, database.read() as session:
        rows = [
            (row.id, row.name, row.created_at, row.expires_at)
            for row in list_tokens(session, actor=CLI, tenant_id=tenant)
        ]
    table = Table("id", "name", "created", "expires")
    for token_id, name, created_at, expires_at in rows:
        table.add_row(token_id, name, f"{created_at:%Y-%m-%d %H:%M}", _expiry(expires_at))
    Console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `token list`).")],
    tenant: TenantOption = None,
) -> None:
    """Revoke a token: it is refused from the next request on."""
    from api.store.principals import CLI, revoke_token

    with _database() as database, database.unversioned_write() as session:
        revoke_token(session, actor=CLI, tenant_id=tenant, token_id=token_id)
    typer.echo(f"revoked {token_id}")


@contextlib.contextmanager
def _database() -> Iterator[Database]:
    """The service's database, upgraded; its refusals become one-line CLI errors."""
    from api.errors import ProblemError

    settings = local_settings()
    upgrade_database(settings.database_url)
    database = Database(settings.database_url)
    try:
        yield database
    except ProblemError as exc:
        raise CliError(exc.detail) from None
    finally:
        database.dispose()


def _expiry(expires_at: datetime | None) -> str:
    if expires_at is None:
        return "never"
    if expires_at.tzinfo is None:  # SQLite gives naive UTC
        expires_at = expires_at.replace(tzinfo=UTC)
    expired = " (expired)" if expires_at <= datetime.now(UTC) else ""
    return f"{expires_at:%Y-%m-%d %H:%M}{expired}"


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
