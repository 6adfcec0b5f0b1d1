"""A port's allocated MAC: drawn at random and checked by the UNIQUE index in the INSERT
itself (resources.add_port); a MAC some port already has is drawn again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api.store import resources

pytestmark = pytest.mark.api


def _draws(*macs: str) -> Iterator[str]:
    yield from macs


def test_an_allocated_mac_already_in_use_is_drawn_again(
    api: Any, net: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = api.admin.create("/ports", {"network_id": net["id"], "mac": "02:00:00:00:00:01"})
    draws = _draws("02:00:00:00:00:01", "02:00:00:00:00:02")
    monkeypatch.setattr(resources, "random_local_mac", lambda: next(draws))
    port = api.admin.create("/ports", {"network_id": net["id"]})
    assert port["mac"] == "02:00:00:00:00:02"
    assert port["ips"] == ["10.0.0.3"]  # the refused draw allocated nothing twice
    listed = api.admin.get("/ports", params={"network_id": net["id"]}).json()["items"]
    assert [p["mac"] for p in listed] == [taken["mac"], "02:00:00:00:00:02"]


def test_no_free_mac_after_many_draws_is_409_and_changes_nothing(
    api: Any, net: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api.admin.create("/ports", {"network_id": net["id"], "mac": "02:00:00:00:00:01"})
    monkeypatch.setattr(resources, "random_local_mac", lambda: "02:00:00:00:00:01")
    with api.unchanged():
        api.problem(api.admin.post("/ports", json={"network_id": net["id"]}), 409, "MAC")
