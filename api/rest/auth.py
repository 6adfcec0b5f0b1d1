"""The caller of a request, as FastAPI dependencies; and credentials kept out of logs.

Tokens and principals themselves live in the store: `api.store.principals`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import Unauthorized
from api.store.db import Database
from api.store.principals import Principal, authenticate, check_admin

_bearer = HTTPBearer(auto_error=False, description="An admin or tenant token.")


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    database: Database = request.app.state.database
    return authenticate(database, credentials.credentials)


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    check_admin(principal)
    return principal


CallerDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]


class QueryCredentialScrubber:
    """ASGI middleware: the query string keeps only parameters some route declares.

    Tokens travel in the Authorization header, which no log shows; a client that
    puts one in the query string instead (``?token=...``, or a bare ``?<token>``)
    must not have it written to the access log, which prints the path with its
    query string, even for a 401. Every parameter no route declares is replaced
    by ``***`` in the request's scope, the very dict uvicorn logs from, before
    anything else sees the request. The routes ignore undeclared parameters anyway.
    """

    MASK = b"***"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._declared: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            scope["query_string"] = self.scrub(scope["query_string"], self.declared(scope))
        await self.app(scope, receive, send)

    def declared(self, scope: Scope) -> frozenset[str]:
        if self._declared is None:
            self._declared = declared_query_parameters(scope["app"])
        return self._declared

    @classmethod
    def scrub(cls, query: bytes, declared: frozenset[str]) -> bytes:
        kept = []
        for pair in query.split(b"&"):
            name = unquote_plus(pair.partition(b"=")[0].decode("latin-1"))
            kept.append(pair if name in declared else cls.MASK)
        return b"&".join(kept)


def declared_query_parameters(app: Any) -> frozenset[str]:
    """The query parameters the routes of `app` (a FastAPI app) declare, per its OpenAPI."""
    assert isinstance(app, FastAPI)
    return frozenset(
        parameter["name"]
        for item in app.openapi()["paths"].values()
        for operation in item.values()
        for parameter in operation.get("parameters", ())
        if parameter["in"] == "query"
    )
