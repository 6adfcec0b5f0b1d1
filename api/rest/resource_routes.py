"""The routes every resource has alike, built once from its store descriptor.

POST "" (201 with Location), GET "" (paged, optional filters), and GET / PATCH /
DELETE "/{<noun>_id}" for hosts, tenants, networks, ports and load balancers.
The store does the scoping and the rules, so these bodies are the same for all
five; a router adds only what is its own (tenant tokens, a port GET that waits).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NamedTuple, TypeVar

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel
from pydantic_core import to_json

from api.config import Settings
from api.paths import API_PREFIX
from api.rest.auth import CallerDep
from api.rest.bodies import page_json
from api.rest.deps import DatabaseDep, PageDep, SettingsDep
from api.rest.schemas import Page, PatchModel, RequestModel, ResourceOut, Text
from api.store import resources
from api.store.models import Revisioned
from api.store.resources import Resource

M = TypeVar("M", bound=Revisioned)

_KW = inspect.Parameter.KEYWORD_ONLY


class RecordReader(NamedTuple):
    """A resource's list pages read as plain records, and a record as its response body
    (api/rest/bodies.py): the ORM and the response model's validation skipped."""

    page: Callable[..., resources.Page[dict[str, Any]]]
    body: Callable[[Mapping[str, Any]], dict[str, Any]]


class ResourceSchemas(NamedTuple):
    """The bodies of a resource's POST and PATCH and the model of its responses."""

    create: type[RequestModel]
    patch: type[PatchModel]
    out: type[ResourceOut]


def add_resource_routes(
    router: APIRouter,
    resource: Resource[M],
    create: Callable[..., M | dict[str, Any]],
    schemas: ResourceSchemas,
    *,
    writer: Any = CallerDep,
    create_options: Callable[[Settings], Mapping[str, Any]] | None = None,
    filters: Mapping[str, Any] | None = None,
    with_get: bool = True,
    records: RecordReader | None = None,
) -> None:
    """Add the routes of `resource` to `router`.

    `create` is the store's create service, called with the body's fields and
    `create_options(settings)`. `writer` is the dependency that names the caller
    of POST, PATCH and DELETE (AdminDep where a tenant token must be refused
    before its body is even read). `filters` become optional query parameters
    of the list (name: type). With `records`, list pages are read as records instead of
    ORM objects, and `create` returns the new row as a record too (same responses).
    """
    create_body, patch_body, out = schemas
    noun = resource.noun.replace(" ", "_")
    id_name = f"{noun}_id"
    item = f"/{{{id_name}}}"

    def create_item(
        *, body: RequestModel, caller: Any, db: Any, settings: Settings, response: Response
    ) -> Response:
        options = create_options(settings) if create_options is not None else {}
        with db.write() as session:
            created = create(session, actor=caller, **body.model_dump(), **options)
            if records is None:
                model = out.of(created)
                item_id, content = model.id, model.model_dump_json(by_alias=True).encode()
        if records is not None:  # a record: its body is built after the commit
            assert isinstance(created, dict)
            fields = records.body(created)
            item_id, content = fields["id"], to_json(fields)
        location = {"Location": f"{API_PREFIX}{router.prefix}/{item_id}"}
        return Response(content, status.HTTP_201_CREATED, location, media_type="application/json")

    def list_items(*, caller: Any, db: Any, page: Any, **where: Any) -> Response:
        with db.read() as session:
            if records is not None:
                page_of = records.page(
                    session, actor=caller, where=where, limit=page.limit, offset=page.offset
                )
                return Response(page_json(page_of, records.body), media_type="application/json")
            found = resources.get_page(
                session, resource, actor=caller, where=where, limit=page.limit, offset=page.offset
            )
            return _json(Page.of(found, out.of), status.HTTP_200_OK)

    def get_item(*, caller: Any, db: Any, **path: str) -> ResourceOut:
        with db.read() as session:
            return out.of(resources.get(session, resource, actor=caller, id=path[id_name]))

    def update_item(*, caller: Any, db: Any, body: PatchModel, **path: str) -> ResourceOut:
        with db.write() as session:
            changes = body.changes()
            obj = resources.update(
                session, resource, actor=caller, id=path[id_name], changes=changes
            )
            return out.of(obj)

    def delete_item(*, caller: Any, db: Any, **path: str) -> None:
        with db.write() as session:
            resources.delete(session, resource, actor=caller, id=path[id_name])

    def parameter(name: str, annotation: Any, **default: Any) -> inspect.Parameter:
        return inspect.Parameter(name, _KW, annotation=annotation, **default)

    item_id = parameter(id_name, Annotated[Text, Path()])
    caller = parameter("caller", CallerDep)
    author = parameter("caller", writer)
    db = parameter("db", DatabaseDep)
    query = [
        parameter(name, Annotated[_text(kind) | None, Query()], default=None)
        for name, kind in (filters or {}).items()
    ]
    _route(
        router.post("", status_code=status.HTTP_201_CREATED),
        create_item,
        f"create_{noun}",
        [
            parameter("body", create_body),
            author,
            db,
            parameter("settings", SettingsDep),
            parameter("response", Response),
        ],
        out,
    )
    list_parameters = [caller, db, parameter("page", PageDep), *query]
    _route(router.get(""), list_items, f"list_{noun}s", list_parameters, Page[out])  # type: ignore[valid-type]
    if with_get:
        _route(router.get(item), get_item, f"get_{noun}", [item_id, caller, db], out)
    patch = [item_id, parameter("body", patch_body), author, db]
    _route(router.patch(item), update_item, f"update_{noun}", patch, out)
    delete = router.delete(item, status_code=status.HTTP_204_NO_CONTENT)
    _route(delete, delete_item, f"delete_{noun}", [item_id, author, db], None)


def _json(body: BaseModel, status_code: int, headers: Mapping[str, str] | None = None) -> Response:
    """`body` (already validated: built by the response model itself) as JSON.

    NOTE: FastAPI would dump a returned model, validate the dump against the declared
    response model again and dump it once more; for a page of 100 ports that was
    most of the request's CPU (BENCHMARKS.md, rest_load). The declared model still
    documents the response in OpenAPI.
    """
    return Response(
        body.model_dump_json(by_alias=True), status_code, headers, media_type="application/json"
    )


def _text(kind: Any) -> Any:
    """Free-text parameters refuse NUL (`Text`); enumerations stay as they are."""
    return Text if kind is str else kind


def _route(
    decorate: Callable[[Callable[..., Any]], Any],
    endpoint: Callable[..., Any],
    name: str,
    parameters: list[inspect.Parameter],
    returns: Any,
) -> None:
    # NOTE: FastAPI reads the path, query, body and dependencies from the
    # endpoint's signature; the generic bodies take keywords, so it is declared here.
    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=returns
    )
    decorate(endpoint)
