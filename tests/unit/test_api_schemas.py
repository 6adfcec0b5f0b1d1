"""Request bodies: strict types, unknown fields, immutable fields, cross-field rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from api.rest.schemas import (
    BackendIn,
    HealthCheckIn,
    LoadBalancerUpdate,
    NetworkCreate,
    NetworkUpdate,
    PortCreate,
    PortUpdate,
)

pytestmark = pytest.mark.unit

NET = "9a0e6c52-3f0b-4a8e-9b7a-5f1e2d3c4b5a"


def errors(model: type[BaseModel], body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps(body))
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


def test_strict_types_refuse_numbers_in_strings() -> None:
    found = errors(NetworkCreate, {"name": "a", "type": "vlan", "segmentation_id": "5"})
    assert found[0][0] == ("segmentation_id",)


def test_unknown_fields_are_refused() -> None:
    found = errors(PortCreate, {"network_id": NET, "colour": "blue"})
    assert found == [(("colour",), "Extra inputs are not permitted")]


def test_gateway_error_names_the_gateway_field() -> None:
    outside = errors(
        NetworkCreate, {"name": "a", "type": "vlan", "cidr": "10.0.0.0/24", "gateway": "10.0.1.1"}
    )
    assert outside[0][0] == ("gateway",) and "outside 10.0.0.0/24" in outside[0][1]
    broadcast = errors(
        NetworkCreate,
        {"name": "a", "type": "vlan", "cidr": "10.0.0.0/24", "gateway": "10.0.0.255"},
    )
    assert "broadcast" in broadcast[0][1]
    no_cidr = errors(NetworkCreate, {"name": "a", "type": "vlan", "gateway": "10.0.0.1"})
    assert no_cidr[0][0] == ("gateway",) and "needs a cidr" in no_cidr[0][1]


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (NetworkUpdate, "type"),
        (NetworkUpdate, "tenant_id"),
        (NetworkUpdate, "segmentation_id"),
        (NetworkUpdate, "cidr"),
        (PortUpdate, "network_id"),
        (PortUpdate, "status"),
        (LoadBalancerUpdate, "vip"),
        (LoadBalancerUpdate, "port"),
    ],
)
def test_immutable_fields_are_named_in_the_error(model: type[BaseModel], field: str) -> None:
    found = errors(model, {field: "anything"})
    assert found[0][0] == (field,)
    assert "cannot be changed after creation" in found[0][1]


def test_patch_distinguishes_absent_from_null() -> None:
    assert PortUpdate.model_validate({"name": None}).changes() == {"name": None}
    assert PortUpdate.model_validate({}).changes() == {}
    # mac may be changed but never removed
    assert errors(PortUpdate, {"mac": None})[0][0] == ("mac",)
    assert errors(NetworkUpdate, {"name": None})[0][0] == ("name",)


def test_nested_patch_keeps_only_given_health_check_fields() -> None:
    update = LoadBalancerUpdate.model_validate({"health_check": {"rise": 3}})
    assert update.changes() == {"health_check": {"rise": 3}}


@pytest.mark.parametrize("weight", [0, 101, 1.5])
def test_backend_weight_is_1_to_100(weight: object) -> None:
    assert errors(BackendIn, {"ip": "10.0.0.5", "port": 80, "weight": weight})[0][0] == ("weight",)


def test_backend_needs_an_ip_or_a_port() -> None:
    assert "needs an ip or a port_id" in errors(BackendIn, {"port": 80})[0][1]


def test_health_check_timeout_cannot_exceed_interval() -> None:
    found = errors(HealthCheckIn, {"interval": 1.0, "timeout": 1.5})
    assert found[0][0] == ("timeout",)
    assert HealthCheckIn.model_validate({"interval": 1, "timeout": 1}).timeout == 1.0


@pytest.mark.parametrize(
    "mac", ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "zz:00:00:00:00:00"]
)
def test_port_mac_must_be_unicast(mac: str) -> None:
    assert errors(PortCreate, {"network_id": NET, "mac": mac})[0][0] == ("mac",)


def test_port_ips_must_be_ipv4_each() -> None:
    found = errors(PortCreate, {"network_id": NET, "ips": ["10.0.0.5", "10.0.0.256", "::1"]})
    assert [loc for loc, _ in found] == [("ips", 1), ("ips", 2)]


def test_ids_in_bodies_must_be_uuids() -> None:
    assert "not a UUID" in errors(PortCreate, {"network_id": "net-1"})[0][1]
