"""The problems a request can run into, as plain exceptions (no HTTP framework here).

Store and REST code raise `ProblemError` subclasses; each carries the HTTP
status it maps to. `api.rest.problems` turns them into RFC 9457
``application/problem+json`` responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ProblemError(Exception):
    status: int = 500

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers


class NotFound(ProblemError):
    status = 404


class Conflict(ProblemError):
    status = 409


class Invalid(ProblemError):
    """422: the request is well-formed JSON but asks for something impossible."""

    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}", errors=[{"loc": ["body", *field.split(".")], "msg": message}]
        )


class Forbidden(ProblemError):
    status = 403


class Unauthorized(ProblemError):
    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})
