"""The error responses every route documents: RFC 9457 problems, as `api.rest.problems` sends.

Each router declares them once (``APIRouter(responses=...)``), so the OpenAPI
document lists, for every operation, the statuses it can answer besides its
2xx, with the ``application/problem+json`` body they really have (``detail``
is one string; ``errors`` lists the fields of a 422).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from api.rest.problems import PROBLEM_JSON


class ProblemItem(BaseModel):
    loc: list[str | int] = Field(description="Where: 'body', 'query' or 'path', then the field.")
    msg: str
    type: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(description="Always 'about:blank': the status says what kind.")
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What went wrong, precisely, for a human.")
    errors: list[ProblemItem] | None = Field(
        default=None, description="422 only: each invalid field."
    )


_WHEN = {
    400: "The body cannot be read as JSON text at all (e.g. it is not UTF-8).",
    401: "No bearer token, or an unknown, revoked or expired one.",
    403: "The token may not do this (e.g. it needs an admin token).",
    404: "No such object, or one the token may not see (the same answer).",
    409: "Conflicts with the current state: a name, address, MAC or binding in use.",
    422: "Invalid request: `detail` names each invalid field.",
    429: "Too many requests of this token at once; retry later.",
    503: "The database is unreachable; retry after `Retry-After` seconds.",
}
# Inline, not a $ref: FastAPI would document a response model as application/json.
_SCHEMA = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
_ITEM = _SCHEMA.pop("$defs")["ProblemItem"]
_SCHEMA["properties"]["errors"]["anyOf"][0]["items"] = _ITEM


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of `statuses`, each an application/problem+json body."""
    return {
        status: {"description": _WHEN[status], "content": {PROBLEM_JSON: {"schema": _SCHEMA}}}
        for status in statuses
    }


# Every route under the API prefix: it needs a token, reads or writes SQL.
API_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 422, 429, 503)
