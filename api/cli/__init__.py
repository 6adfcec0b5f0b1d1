"""The `ovs-fabric` command.

One module per command group, each with a `register(app)`; COMMAND_MODULES below
is the one place that lists them (a new group: a module with `register`, plus one
entry there). Groups of other installed packages (`ovs-fabric lab`) come in
through the `ovs_fabric.commands` entry points, so the service never imports them.

Errors a user can cause print one line (with a hint where there is one) and exit
with status 2; `--debug` (or OVS_FABRIC_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from types import ModuleType
from typing import Annotated

import typer

from api.cli import (
    apply,
    database,
    diagnose,
    host,
    pki,
    remote,
    resources,
    serve,
    status,
    tokens,
)
from api.cli.common import USAGE_ERROR, CliError

COMMAND_MODULES: tuple[ModuleType, ...] = (
    serve, database, tokens, pki, host, resources, status, apply, diagnose,
)
COMMAND_PLUGINS = "ovs_fabric.commands"

app = typer.Typer(
    name="ovs-fabric",
    help="SDN controller service for Open vSwitch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_debug = False


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="OVS_FABRIC_DEBUG",
                           help="Show the traceback of an error instead of one line.")
    ] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="The service's URL, for every command below.")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Bearer token, for every command below.")
    ] = None,
) -> None:
    global _debug
    _debug = debug
    remote.given_before_the_command(url, token)


for _module in COMMAND_MODULES:
    _module.register(app)


def register_plugin_commands() -> None:
    """Attach sub-command groups that other installed packages declare (`ovs-fabric lab ...`).

    NOTE: a package adds commands through the `ovs_fabric.commands` entry-point group
    (pyproject), so this CLI never imports it: the service does not depend on the lab.
    """
    registered = {group.name for group in app.registered_groups}
    for plugin in entry_points(group=COMMAND_PLUGINS):
        if plugin.name in registered:
            continue
        try:
            sub_app = plugin.load()
        except Exception as exc:  # a broken optional package must not take `serve` down with it
            typer.echo(f"ovs-fabric: warning: {plugin.name} commands unavailable: {exc}", err=True)
            continue
        if isinstance(sub_app, typer.Typer):
            app.add_typer(sub_app, name=plugin.name)
            registered.add(plugin.name)


def main(argv: list[str] | None = None) -> None:
    register_plugin_commands()
    try:
        app(args=argv)
    except Exception as exc:
        if _debug:
            raise
        _fail(describe(exc))
    except KeyboardInterrupt:
        if _debug:
            raise
        typer.echo("ovs-fabric: interrupted", err=True)
        sys.exit(130)


def describe(exc: Exception) -> str:
    """One line for any error: the user's own in its words, a bug with a pointer to --debug."""
    # NOTE: imported here: commands that talk to a remote service start faster
    # without SQLAlchemy and Alembic.
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from api.store.db import DatabaseUrlError

    if isinstance(exc, CliError | DatabaseUrlError | CommandError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {_first_line(str(exc.orig) if hasattr(exc, 'orig') else str(exc))}"
    if isinstance(exc, OSError):
        return str(exc)
    return (
        f"internal error: {type(exc).__name__}: {exc} "
        "(hint: rerun with --debug for the traceback)"
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _fail(message: str) -> None:
    typer.echo(f"ovs-fabric: error: {_first_line(message)}", err=True)
    sys.exit(USAGE_ERROR)
