"""Query parameters a route does not take are refused, not ignored.

`GET /ports?netwrok_id=...` that silently listed every port would read as an
answer to the question asked; Neutron's filter validation refuses such filters
for the same reason. Runs as an app-wide dependency, after the credential
scrubber (api/rest/auth.py) has masked every name no route declares as ``***``:
the refusal can name a misplaced parameter but never repeats a token someone put
in the query string.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.errors import ProblemError


class UnknownQueryParameter(ProblemError):
    status = 422


def _query_parameters(dependant: Dependant) -> set[str]:
    """The route's own query parameters and those of every dependency it has."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_parameters(dependency)
    return names


async def refuse_unknown_query_parameters(request: Request) -> None:
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    # (a walk of a few dependencies: cheaper than any request it guards)
    accepted = _query_parameters(route.dependant)
    unknown = sorted({name for name in request.query_params if name not in accepted})
    if not unknown:
        return
    takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
    raise UnknownQueryParameter(
        f"unknown query parameter {', '.join(repr(n) for n in unknown)} for "
        f"{request.method} {request.url.path}: {takes}",
        errors=[{"loc": ["query", name], "msg": "unknown query parameter"} for name in unknown],
    )
