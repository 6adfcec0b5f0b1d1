"""The acting principal of a resource service cannot be left out.

A default actor would make a route that forgets `actor=` act with full rights;
so every public service of the store takes it as a keyword without default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from api.store import principals, resources

pytestmark = pytest.mark.unit


def _services() -> list[Callable[..., Any]]:
    """Every public function of the store that works in a session."""
    found = []
    for module in (resources, principals):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("_") or function.__module__ != module.__name__:
                continue
            if next(iter(inspect.signature(function).parameters), None) == "session":
                found.append(function)
    return found


def test_the_services_are_found() -> None:
    names = {function.__name__ for function in _services()}
    assert {"get", "get_page", "update", "delete", "create_port", "create_token"} <= names


@pytest.mark.parametrize("service", _services(), ids=lambda function: function.__name__)
def test_actor_is_keyword_only_without_default(service: Callable[..., Any]) -> None:
    actor = inspect.signature(service).parameters.get("actor")
    assert actor is not None, f"{service.__name__} takes no actor"
    assert actor.kind is inspect.Parameter.KEYWORD_ONLY
    assert actor.default is inspect.Parameter.empty


@pytest.mark.parametrize("service", _services(), ids=lambda function: function.__name__)
def test_a_call_without_actor_is_a_type_error(service: Callable[..., Any]) -> None:
    # Every other parameter is given, so the missing actor is what fails (before
    # the session, a placeholder here, is ever touched).
    parameters = list(inspect.signature(service).parameters.values())
    positional = [object() for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = {p.name: None for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "actor"}
    with pytest.raises(TypeError, match="actor"):
        service(*positional, **keywords)
