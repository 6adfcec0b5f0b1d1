"""The routes every resource has alike: list, get, patch and delete, built once.

Each resource router calls `add_resource_routes` with its `api.store.resources`
descriptor and its schemas; the store does the scoping, so these bodies are the
same for hosts, tenants, networks, ports and load balancers. Creation differs
per resource and stays in each router (with `set_location`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Response, status

from api.paths import API_PREFIX
from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep, PageDep
from api.rest.schemas import Page, PatchModel
from api.store import resources
from api.store.models import Revisioned
from api.store.resources import Resource

M = TypeVar("M", bound=Revisioned)
O = TypeVar("O")  # noqa: E741

_KW = inspect.Parameter.KEYWORD_ONLY


def set_location(response: Response, router: APIRouter, item_id: str) -> None:
    """The Location of a resource a POST just created."""
    response.headers["Location"] = f"{API_PREFIX}{router.prefix}/{item_id}"


def add_resource_routes(
    router: APIRouter,
    resource: Resource[M],
    *,
    out: Callable[[M], O],
    out_type: type[O],
    patch_body: type[PatchModel],
    filters: Mapping[str, Any] | None = None,
    writer: Any = CallerDep,
    with_get: bool = True,
) -> None:
    """GET "" (with `filters` as optional query parameters), GET/PATCH/DELETE "/{<noun>_id}".

    `writer` is the dependency that names the caller of PATCH and DELETE (AdminDep
    where a tenant token must be refused before its body is even read).
    """
    noun = resource.noun.replace(" ", "_")
    id_name = f"{noun}_id"
    item = f"/{{{id_name}}}"
    identify = inspect.Parameter(id_name, _KW, annotation=str)
    db = inspect.Parameter("db", _KW, annotation=DatabaseDep)

    def list_items(*, caller: Any, db: Any, page: Any, **where: Any) -> Page[Any]:
        with db.read() as session:
            found = resources.get_page(
                session, resource, actor=caller, where=where, limit=page.limit, offset=page.offset
            )
            return Page.of(found, out)

    def get_item(*, caller: Any, db: Any, **path: str) -> O:
        with db.read() as session:
            return out(resources.get(session, resource, actor=caller, id=path[id_name]))

    def update_item(*, caller: Any, db: Any, body: PatchModel, **path: str) -> O:
        with db.write() as session:
            changes = body.changes()
            obj = resources.update(
                session, resource, actor=caller, id=path[id_name], changes=changes
            )
            return out(obj)

    def delete_item(*, caller: Any, db: Any, **path: str) -> None:
        with db.write() as session:
            resources.delete(session, resource, actor=caller, id=path[id_name])

    query = [
        inspect.Parameter(name, _KW, default=None, annotation=Annotated[kind | None, Query()])
        for name, kind in (filters or {}).items()
    ]
    _route(
        router.get(""),
        list_items,
        f"list_{noun}s",
        [inspect.Parameter("caller", _KW, annotation=CallerDep), db, _page, *query],
        Page[out_type],  # type: ignore[valid-type]
    )
    if with_get:
        caller = inspect.Parameter("caller", _KW, annotation=CallerDep)
        _route(router.get(item), get_item, f"get_{noun}", [identify, caller, db], out_type)
    writer_param = inspect.Parameter("caller", _KW, annotation=writer)
    body = inspect.Parameter("body", _KW, annotation=patch_body)
    _route(
        router.patch(item),
        update_item,
        f"update_{noun}",
        [identify, body, writer_param, db],
        out_type,
    )
    _route(
        router.delete(item, status_code=status.HTTP_204_NO_CONTENT),
        delete_item,
        f"delete_{noun}",
        [identify, writer_param, db],
        None,
    )


_page = inspect.Parameter("page", _KW, annotation=PageDep)


def _route(
    decorate: Callable[[Callable[..., Any]], Any],
    endpoint: Callable[..., Any],
    name: str,
    parameters: list[inspect.Parameter],
    returns: Any,
) -> None:
    # NOTE: FastAPI reads path, query, body and dependencies from the endpoint's
    # signature; the generic bodies take keywords, so the signature is declared here.
    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=returns
    )
    decorate(endpoint)
