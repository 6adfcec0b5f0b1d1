"""The `ovs-fabric` command: serve, database schema, tokens (and `lab`, when installed).

Errors a user can cause (bad database URL, unknown revision, unreachable
database, invalid settings) print one line and exit with status 2.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from api.config import Settings
from api.pki import DEFAULT_PKI_DIR, PkiError
from api.store.db import (
    Database,
    DatabaseUrlError,
    downgrade_database,
    head_revision,
    parse_database_url,
    schema_revision,
    upgrade_database,
)

app = typer.Typer(
    name="ovs-fabric",
    help="SDN controller service for Open vSwitch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
token_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
pki_app = typer.Typer(help="The TLS certificate authority (mutual TLS).", no_args_is_help=True)
host_app = typer.Typer(help="Run on a hypervisor: prepare its OVS.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(pki_app, name="pki")
app.add_typer(host_app, name="host")

USAGE_ERROR = 2
SHUTDOWN_GRACE_SECONDS = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise CliError(f"invalid settings: {problems}") from None
    parse_database_url(settings.database_url)
    return settings


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default: api_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: api_port).")] = None,
) -> None:
    """Run the API (and, when enabled, the controller) in this process."""
    import faulthandler
    import logging
    import signal

    import uvicorn

    # `kill -USR1 <pid>` prints every thread's stack: the first thing to look at
    # when a controller seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    # The controller logs state changes (switch connected, flows changed, host
    # unreachable) on the root logger; uvicorn only configures its own.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("os_ken").setLevel(logging.WARNING)
    from types import FrameType

    from api.main import create_app

    settings = _settings()
    from api import runtime

    try:
        runtime.claim_sqlite_controller(settings)
    except runtime.ControllerAlreadyRuns as exc:
        raise CliError(str(exc)) from None
    # Migrate before uvicorn starts, so a bad database fails here with one line.
    upgrade_database(settings.database_url)
    application = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Long-polls (`?wait=active`) see this and answer at once; without it
            # uvicorn waits for every one of them to time out before it exits.
            application.state.shutting_down.set()
            super().handle_exit(sig, frame)
            # A requested shutdown that completes is a success: exit 0 rather than
            # have uvicorn re-raise the signal once it is done.
            self._captured_signals.clear()

    Server(
        uvicorn.Config(
            application,
            host=host or settings.api_host,
            port=port or settings.api_port,
            log_level="info",
            # Requests still running this long after SIGTERM are cancelled, so the
            # process exits within seconds whatever clients do.
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
    ).run()


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the schema (default: to the newest revision)."""
    settings = _settings()
    upgrade_database(settings.database_url, revision)
    typer.echo(f"database at revision {schema_revision(settings.database_url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. 'base' or '-1'.")],
) -> None:
    """Downgrade the schema to REVISION."""
    settings = _settings()
    downgrade_database(settings.database_url, revision)
    typer.echo(f"database at revision {schema_revision(settings.database_url) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and the newest one available."""
    settings = _settings()
    current = schema_revision(settings.database_url) or "base"
    typer.echo(f"current: {current}  head: {head_revision(settings.database_url)}")


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

    settings = _settings()
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


PkiDirOption = Annotated[
    Path, typer.Option("--dir", help="The PKI directory.", show_default=True)
]


@pki_app.command("init")
def pki_init(pki_dir: PkiDirOption = DEFAULT_PKI_DIR) -> None:
    """Make the CA and the controller's key and certificate (idempotent)."""
    from api import pki

    try:
        issued = pki.init(pki_dir)
    except pki.PkiError as exc:
        raise CliError(str(exc)) from None
    for item in issued:
        state = "created" if item.created else "kept"
        typer.echo(f"{state}: {item.pair.private_key} {item.pair.certificate}")


@pki_app.command("host")
def pki_host(
    name: Annotated[str, typer.Argument(help="The host's name, as registered (its CN).")],
    pki_dir: PkiDirOption = DEFAULT_PKI_DIR,
) -> None:
    """Issue host NAME's key and certificate, signed by the CA (idempotent)."""
    from api import pki

    try:
        issued = pki.issue_host(pki_dir, name)
    except pki.PkiError as exc:
        raise CliError(str(exc)) from None
    state = "created" if issued.created else "kept"
    typer.echo(f"{state}: {issued.pair.private_key} {issued.pair.certificate}")


@host_app.command("prepare")
def host_prepare(
    name: Annotated[str, typer.Option(help="This host's name (its certificate's CN).")],
    ovsdb_listen: Annotated[
        str, typer.Option(help="ADDRESS:PORT for the OVSDB TLS listener (pssl:).")
    ],
    pki_dir: Annotated[
        Path, typer.Option("--pki-dir", help="Holds host-NAME-*.pem and ca-cert.pem.")
    ] = DEFAULT_PKI_DIR,
    underlay_ip: Annotated[
        str | None, typer.Option(help="Underlay address/prefix for VXLAN, on br-phy.")
    ] = None,
    underlay_if: Annotated[
        str | None, typer.Option(help="The underlay NIC, made a port of br-phy.")
    ] = None,
    trunk: Annotated[str | None, typer.Option(help="The VLAN trunk NIC (the uplink).")] = None,
    datapath_type: Annotated[str, typer.Option(help="br-phy's datapath type.")] = "netdev",
    db: Annotated[
        str | None, typer.Option(help="OVSDB to configure (default: the local socket).")
    ] = None,
) -> None:
    """Make this hypervisor's OVS ready for the controller over mutual TLS (idempotent)."""
    from api import hostprep

    plan = hostprep.HostPlan(
        name=name, pki_dir=pki_dir, ovsdb_listen=ovsdb_listen, underlay_ip=underlay_ip,
        underlay_if=underlay_if, trunk=trunk, datapath_type=datapath_type, db=db,
    )
    try:
        changes = hostprep.prepare(plan)
        remote = hostprep.ovsdb_remote_for(ovsdb_listen)
    except (hostprep.PrepareError, PkiError) as exc:
        raise CliError(str(exc)) from None
    for change in changes:
        typer.echo(f"changed: {change}")
    if not changes:
        typer.echo("nothing to change")
    facts = {"name": name, "ovsdb_remote": remote, "tunnel_ip": underlay_ip, "uplink": trunk}
    registration = ", ".join(
        f"{key}={value.split('/')[0] if key == 'tunnel_ip' else value}"
        for key, value in facts.items()
        if value is not None
    )
    typer.echo(f"register with: {registration}")


COMMAND_PLUGINS = "ovs_fabric.commands"


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
    except (CliError, DatabaseUrlError, CommandError) as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(f"database error: {_first_line(str(exc.orig) if hasattr(exc, 'orig') else str(exc))}")
    except OSError as exc:
        _fail(str(exc))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _fail(message: str) -> None:
    typer.echo(f"ovs-fabric: error: {_first_line(message)}", err=True)
    sys.exit(USAGE_ERROR)


if __name__ == "__main__":
    main()
