"""What every `ovs-fabric` command shares: the one-line error, the exit status, settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.config import Settings

USAGE_ERROR = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def local_settings() -> Settings:
    """The service's settings (environment), for commands that work on its database."""
    # NOTE: imported here, not above: commands that only talk to a remote service
    # start faster without the service's settings, SQLAlchemy and Alembic.
    from pydantic import ValidationError

    from api.config import Settings
    from api.store.db import parse_database_url

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise CliError(f"invalid settings: {problems}") from None
    parse_database_url(settings.database_url)
    return settings
