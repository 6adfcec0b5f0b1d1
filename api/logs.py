"""Logging for `ovs-fabric serve`: the classic text lines, or one JSON object per line.

The code logs through the standard library everywhere (os-ken, uvicorn and
SQLAlchemy do too). In JSON mode a structlog `ProcessorFormatter` renders every
record with the ids bound to the current context: the request id and the path's
ids for a REST request (api/rest/observability.py), the host for a host agent's
worker thread (controller/host_agent.py), plus whatever a call passes as
`extra=` (a port's id and network when its status changes).
"""

from __future__ import annotations

import logging
import sys

import structlog

from api.config import Settings


def json_formatter() -> logging.Formatter:
    """One JSON object per record: timestamp, level, logger, event (the message), ids."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def configure_logging(settings: Settings) -> None:
    """Apply `log_format` and `log_level` to the running process.

    Called as the service starts (the app's lifespan, so whatever runs the app gets
    it). Text mode keeps the handlers the entry point set up (`ovs-fabric serve`:
    classic lines; uvicorn: its own) and only sets the level. JSON mode puts one
    JSON handler on the root logger and makes uvicorn's loggers, which uvicorn gave
    handlers of their own, hand their records to it.
    """
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    # os-ken logs every switch handshake detail at INFO.
    logging.getLogger("os_ken").setLevel(max(logging.WARNING, root.level))
    if settings.log_format != "json":
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
