"""Hostile input and hostile tenants (issue 10): every answer a precise 4xx, nothing changed,
nothing of one tenant named to another; the same answer on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.api

LIST_ROUTES = ["/hosts", "/tenants", "/networks", "/ports", "/load-balancers"]


# ---- defect 1: paging parameters are bounded ---------------------------------------------


@pytest.mark.parametrize("path", LIST_ROUTES)
@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"offset": "9223372036854775808"}, "offset"),
        ({"offset": "10000001"}, "offset: Input should be less than or equal to 10000000"),
        ({"offset": "-1"}, "offset"),
        ({"limit": "9223372036854775808"}, "limit"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_out_of_range_paging_is_a_422(
    api: Any, path: str, query: dict[str, str], fragment: str
) -> None:
    api.problem(api.admin.get(path, params=query), 422, fragment)


def test_the_deepest_page_allowed_is_answered(api: Any) -> None:
    page = api.admin.get("/tenants", params={"offset": 10_000_000}).json()
    assert (page["items"], page["offset"]) == ([], 10_000_000)


# ---- defect 2: NUL characters, the same 422 on every database -----------------------------

NUL = "\u0000"


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/ports/%00", {}, "port_id"),
        ("/networks/%00", {}, "network_id"),
        ("/hosts/x%00", {}, "host_id"),
        ("/load-balancers/%00", {}, "load_balancer_id"),
        ("/tenants/%00", {}, "tenant_id"),
        ("/ports", {"vm_id": NUL}, "vm_id"),
        ("/ports", {"network_id": NUL}, "network_id"),
        ("/ports", {"host_id": "a" + NUL}, "host_id"),
        ("/networks", {"tenant_id": NUL}, "tenant_id"),
        ("/load-balancers", {"network_id": NUL}, "network_id"),
    ],
)
def test_nul_in_a_path_id_or_filter_is_a_422(
    api: Any, path: str, params: dict[str, str], fragment: str
) -> None:
    api.problem(api.admin.get(path, params=params), 422, fragment, "NUL")


def test_nul_in_a_body_string_is_a_422_and_changes_nothing(api: Any, net: dict[str, Any]) -> None:
    port = api.admin.create("/ports", {"network_id": net["id"]})
    with api.unchanged():
        for method, path, body, field in [
            ("POST", "/tenants", {"name": "n", "description": NUL}, "description"),
            ("POST", "/ports", {"network_id": net["id"], "vm_id": "x" + NUL}, "vm_id"),
            ("PATCH", f"/ports/{port['id']}", {"vm_id": "nul" + NUL + "byte"}, "vm_id"),
            ("POST", "/hosts", {"name": "h", "ovsdb_remote": "unix:/r" + NUL}, "ovsdb_remote"),
            (
                "POST",
                "/hosts",
                {"name": "h", "ovsdb_remote": "unix:/r", "libvirt_uri": "qemu://" + NUL},
                "libvirt_uri",
            ),
            ("POST", f"/tenants/{net['tenant_id']}/tokens", {"name": NUL}, "name"),
        ]:
            response = api.admin.request(method, path, json=body)
            api.problem(response, 422, f"{field}: ", "NUL")


def test_a_tenant_token_gets_the_same_answers(api: Any) -> None:
    _, caller = api.tenant("acme")
    api.problem(caller.get("/ports/%00"), 422, "NUL")
    api.problem(caller.get("/ports", params={"offset": 2**63}), 422, "offset")
