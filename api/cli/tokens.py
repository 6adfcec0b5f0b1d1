"""`ovs-fabric token`: API bearer tokens, written straight into the service's database."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.common import CliError, local_settings
from api.store.db import Database, upgrade_database

token_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="A label for the token.")],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant id; without it the token is an admin token.")
    ] = None,
) -> None:
    """Create a token and print it (it is shown only once)."""
    from api.errors import ProblemError
    from api.store.principals import CLI, create_token

    settings = local_settings()
    upgrade_database(settings.database_url)
    database = Database(settings.database_url)
    try:
        with database.unversioned_write() as session:
            _row, token = create_token(session, actor=CLI, name=name, tenant_id=tenant)
    except ProblemError as exc:
        raise CliError(exc.detail) from None
    finally:
        database.dispose()
    typer.echo(token)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
