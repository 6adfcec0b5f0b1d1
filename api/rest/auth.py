"""The caller of a request, as FastAPI dependencies.

Tokens and principals themselves live in the store: `api.store.principals`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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
