"""`ovs-fabric serve`: the API (and, when enabled, the controller) in this process."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.common import CliError, local_settings

SHUTDOWN_GRACE_SECONDS = 2


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
    from api.store.db import upgrade_database

    settings = local_settings()
    from api import runtime
    from api.logs import configure_logging

    # Before the migration's lines, so a JSON log is JSON from its first line (the
    # app's start applies it again, after uvicorn set up its own loggers).
    configure_logging(settings)

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


def register(app: typer.Typer) -> None:
    app.command()(serve)
