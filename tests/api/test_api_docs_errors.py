"""OpenAPI documents, and problem details for errors FastAPI raises itself."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.api


def test_openapi_and_docs_are_served_with_request_examples(api: Any) -> None:
    assert api.client.get("/docs").status_code == 200
    document = api.client.get("/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/api/v1/hosts",
        "/api/v1/tenants",
        "/api/v1/tenants/{tenant_id}/tokens",
        "/api/v1/networks",
        "/api/v1/ports/{port_id}",
        "/api/v1/load-balancers/{load_balancer_id}",
        "/api/v1/topology",
        "/api/v1/revision",
        "/healthz",
    ):
        assert path in paths, path
    schemas = document["components"]["schemas"]
    for name in (
        "HostCreate",
        "TenantCreate",
        "NetworkCreate",
        "NetworkUpdate",
        "PortCreate",
        "PortUpdate",
        "LoadBalancerCreate",
        "LoadBalancerUpdate",
        "TokenCreate",
    ):
        assert schemas[name].get("examples"), name
        assert schemas[name]["additionalProperties"] is False, name
    assert "bearer" in str(document["components"]["securitySchemes"]).lower()
    # immutable fields are refused, not advertised
    assert "type" not in schemas["NetworkUpdate"]["properties"]


def test_request_examples_are_accepted(api: Any) -> None:
    """The documented examples are valid bodies (ids aside)."""
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    tenant = api.admin.create("/tenants", schemas["TenantCreate"]["examples"][0])
    host = api.admin.create("/hosts", schemas["HostCreate"]["examples"][0])
    network_example = dict(schemas["NetworkCreate"]["examples"][0], tenant_id=tenant["id"])
    network = api.admin.create("/networks", network_example)
    port_example = dict(
        schemas["PortCreate"]["examples"][1], network_id=network["id"], host_id=host["id"]
    )
    port = api.admin.create("/ports", port_example)
    lb_example = schemas["LoadBalancerCreate"]["examples"][0]
    lb_example = dict(
        lb_example,
        network_id=network["id"],
        backends=[lb_example["backends"][0], dict(lb_example["backends"][1], port_id=port["id"])],
    )
    assert api.admin.create("/load-balancers", lb_example)["backends"][1]["ip"] == "10.0.0.10"


def test_malformed_json_is_a_422_problem(api: Any) -> None:
    response = api.admin.post(
        "/tenants", content=b'{"name": "acme",', headers={"Content-Type": "application/json"}
    )
    problem = api.problem(response, 422)
    assert problem["errors"][0]["type"] == "json_invalid"
    api.problem(api.admin.post("/tenants", json=["acme"]), 422)


def test_unknown_routes_and_methods_are_problems(api: Any) -> None:
    api.problem(api.admin.get("/nothing-here"), 404)
    api.problem(api.admin.request("PUT", "/tenants"), 405)
