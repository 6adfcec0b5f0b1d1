"""Per request: a request id (logged and echoed back) and the latency metric.

A pure ASGI middleware rather than Starlette's BaseHTTPMiddleware: it runs the
route in the request's own task, so the ids bound here (structlog contextvars)
are seen by every log line of the request, uvicorn's access line included.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import HTTP_REQUEST_SECONDS

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only if it is harmless in a log line and a header.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_UNMATCHED_ROUTE = "<unmatched>"


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route as a template (`/api/v1/ports/{port_id}`): one series per
    route, whatever the ids. Rebuilt from the path and the matched parameters, as
    routers included with a prefix keep only their own part of the path."""
    if scope.get("route") is None:
        return _UNMATCHED_ROUTE  # 404s and redirects: no series per probed path
    segments = str(scope.get("path", "")).split("/")
    names = {str(value): name for name, value in scope.get("path_params", {}).items()}
    return "/".join("{" + names[part] + "}" if part in names else part for part in segments)


class RequestObservability:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500  # what the client gets if the app dies before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            HTTP_REQUEST_SECONDS.labels(
                scope["method"], route_template(scope), str(status)
            ).observe(time.perf_counter() - started)


async def bind_path_ids(request: Request) -> None:
    """An app-wide dependency: the ids in the path (port_id, network_id, ...) join the
    log context. Async on purpose: it runs in the request's task, whose context the
    route (run in a worker thread with a copy of it) and the access log then see."""
    ids = {name: value for name, value in request.path_params.items() if name.endswith("_id")}
    if ids:
        structlog.contextvars.bind_contextvars(**ids)
