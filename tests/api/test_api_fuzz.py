"""Schema-driven fuzzing of the real app (schemathesis), with an admin and a tenant token.

Every operation of /openapi.json gets schema-valid and schema-violating requests
(bounded: FUZZ_EXAMPLES per operation and mode), sent with each token, on each
database the `api` fixture runs on. Every answer must be no 5xx, a documented
status code and content type, and conform to the documented body schema. A
seeded fabric (a tenant, a network, a host, ports, a load balancer) gives the
fuzzer real ids to stumble on; its ids are also fed to every path parameter.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.store.models import Base
from tests.support.db_snapshot import DatabaseSnapshot

pytestmark = pytest.mark.api

# Requests per operation and generation mode, each sent once per token. The
# default keeps the whole fuzz (both databases) near two minutes on two cores;
# raise it locally for a deeper run.
FUZZ_EXAMPLES = int(os.environ.get("OVS_FABRIC_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def seed(api: Any) -> tuple[str, dict[str, str]]:
    """A small fabric; return a tenant token and ids for the path parameters."""
    tenant, caller = api.tenant("fuzz")
    host = api.host("fuzz-host")
    network = caller.create("/networks", {"name": "n", "type": "vxlan", "cidr": "10.9.0.0/24"})
    port = caller.create("/ports", {"network_id": network["id"]})
    api.admin.patch(f"/ports/{port['id']}", json={"host_id": host["id"], "interface": "tap0"})
    lb = caller.create(
        "/load-balancers",
        {
            "network_id": network["id"],
            "name": "lb",
            "vip": "10.9.0.100",
            "protocol": "tcp",
            "port": 80,
            "backends": [{"port_id": port["id"], "port": 8080}],
        },
    )
    # (not the tenant token's id: revoking it would end the tenant's half of the run)
    ids = {
        "tenant_id": tenant["id"],
        "host_id": host["id"],
        "network_id": network["id"],
        "port_id": port["id"],
        "load_balancer_id": lb["id"],
    }
    return caller.token, ids


def load_schema(api: Any) -> Any:
    # Loaded as a document, not with from_asgi: schemathesis would start a second
    # lifespan of the same app on its own event loop (two port-status watchers, one
    # app state), so every request goes through the test's one client instead.
    return schemathesis.openapi.from_dict(api.client.get("/openapi.json").json())


def send(api: Any, case: Any, token: str) -> httpx.Response:
    """`case` through the test's client, as schemathesis would have sent it."""
    kwargs = case.as_transport_kwargs(
        base_url=str(api.client.base_url), headers={"Authorization": f"Bearer {token}"}
    )
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")  # raw bodies (negative cases)
    kwargs.pop("cookies", None)
    response: httpx.Response = api.client.request(**kwargs)
    return response


def test_fuzzed_requests_get_documented_answers_and_no_5xx(api: Any) -> None:
    tenant_token, ids = seed(api)
    tokens = {"admin": api.admin.token, "tenant": tenant_token}
    schema = load_schema(api)
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(api, operation, mode, tokens, ids, statuses)
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    print(f"fuzz: {sum(statuses.values())} requests, statuses {sorted(statuses.items())}")
    assert server_errors == 0
    assert statuses[200] and statuses[201] and statuses[404] and statuses[422]


def fuzz_operation(
    api: Any,
    operation: Any,
    mode: GenerationMode,
    tokens: dict[str, str],
    ids: dict[str, str],
    statuses: Counter[int],
) -> None:
    @hypothesis.settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
    def run(case: Any, real: bool) -> None:
        if real and mode is GenerationMode.POSITIVE and case.path_parameters:
            # Half the schema-valid requests aim at objects that exist.
            for name in case.path_parameters:
                # (but the tenant stays: deleting it would revoke the tenant token)
                if name in ids and not (case.method == "DELETE" and name == "tenant_id"):
                    case.path_parameters[name] = ids[name]
        if case.query and case.query.get("wait") == "active":
            case.query["timeout"] = 0.05  # the long-poll is not what is fuzzed here
        for token in tokens.values():
            response = send(api, case, token)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to violate: no parameters and no body (GET /revision, /healthz, ...).
        assert mode is GenerationMode.NEGATIVE, operation.label


# Sequences per token, and calls per sequence, of the stateful run.
STATEFUL_SEQUENCES = int(os.environ.get("OVS_FABRIC_FUZZ_SEQUENCES", "15"))


def test_stateful_sequences_get_documented_answers_and_no_5xx(api: Any) -> None:
    """Sequences that feed what one call created into the next (links schemathesis
    infers from the schema and Location headers): create, read, change, delete."""
    tenant_token, _ids = seed(api)
    schema = load_schema(api)
    # Each sequence starts from the seeded fabric: hypothesis needs the same draws to
    # meet the same answers (a name created by an earlier sequence would turn a 201
    # into a 409 and change which rules can follow, which it reports as flaky).
    seeded = DatabaseSnapshot(api.client.app.state.database.engine, Base.metadata)
    statuses: Counter[int] = Counter()
    for token in (api.admin.token, tenant_token):

        class Sequences(schema.as_state_machine()):  # type: ignore[misc]
            def setup(self) -> None:
                seeded.restore()

            def call(self, case: Any, **_kwargs: Any) -> Response:
                if case.query and case.query.get("wait") == "active":
                    case.query["timeout"] = 0.05
                return Response.from_any(send(api, case, token))  # noqa: B023

            def validate_response(self, response: Any, case: Any, **_kwargs: Any) -> None:
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)

        Sequences.run(
            settings=hypothesis.settings(
                max_examples=STATEFUL_SEQUENCES,
                stateful_step_count=10,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
        )
    seeded.restore()
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    print(f"stateful fuzz: {sum(statuses.values())} requests, statuses {sorted(statuses.items())}")
    assert server_errors == 0
    assert statuses[201] and statuses[200]
