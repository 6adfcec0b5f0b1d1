"""Response bodies built as plain dicts from store records, for the hot routes.

A list page of 100 ports went through ORM objects and 100 `PortOut` validations
before it was dumped: most of the request's CPU (BENCHMARKS.md, rest_load). The
store reads such pages as records (`resources.port_records`); here they become the
very JSON the response models describe (same keys, same order, same datetime and
number text: pydantic's own serializer writes it), without validating what the
database already holds. tests/api/test_api_bodies.py checks them byte for byte
against the models' dumps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic_core import to_json

from api.rest.schemas import BindingOut, PortOut
from api.store.resources import Page

Record = Mapping[str, Any]

_PORT_FIELDS = tuple(PortOut.model_fields)
_BINDING_FIELDS = tuple(BindingOut.model_fields)


def port_body(record: Record) -> dict[str, Any]:
    """A `PortOut` body from a port record (`resources.PORT_COLUMNS` and `ips`)."""
    return {
        name: {key: record[key] for key in _BINDING_FIELDS} if name == "binding" else record[name]
        for name in _PORT_FIELDS
    }


def page_json(page: Page[dict[str, Any]], body: Callable[[Record], dict[str, Any]]) -> bytes:
    """A `Page[...Out]` as JSON: each record through `body`, serialized once."""
    return to_json(
        {
            "items": [body(record) for record in page.items],
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
        }
    )
