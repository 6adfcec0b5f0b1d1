"""POST /diagnose on the API alone (no switch): how A and B are named, what a tenant may
name, and precise problems for bad input. The switch side is in tests/e2e/test_diagnose.py."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.api


@pytest.fixture
def fabric(api: Any) -> dict[str, Any]:
    """Tenants acme and globex each with network "web" 10.0.0.0/24; acme also "db"
    10.0.0.0/24 (the same addresses again). Ports: acme a (web, .10, VM "vm-a"), b (db, .10),
    c (web, .11, unbound); globex g (web, .10). A load balancer VIP 10.0.0.100 in acme's web."""
    _acme, acme_caller = api.tenant("acme")
    _globex, globex_caller = api.tenant("globex")
    web = acme_caller.create("/networks", {"name": "web", "type": "vxlan", "cidr": "10.0.0.0/24"})
    db = acme_caller.create("/networks", {"name": "db", "type": "vxlan", "cidr": "10.0.0.0/24"})
    theirs = globex_caller.create(
        "/networks", {"name": "web", "type": "vxlan", "cidr": "10.0.0.0/24"}
    )
    host = api.host("h1")
    ports = {
        "a": acme_caller.create(
            "/ports", {"network_id": web["id"], "name": "a", "ips": ["10.0.0.10"]}
        ),
        "b": acme_caller.create(
            "/ports", {"network_id": db["id"], "name": "b", "ips": ["10.0.0.10"]}
        ),
        "c": acme_caller.create(
            "/ports", {"network_id": web["id"], "name": "c", "ips": ["10.0.0.11"]}
        ),
        "g": globex_caller.create(
            "/ports", {"network_id": theirs["id"], "name": "g", "ips": ["10.0.0.10"]}
        ),
    }
    api.admin.patch(
        f"/ports/{ports['a']['id']}",
        json={"host_id": host["id"], "interface": "tap-a", "vm_id": "vm-a"},
    )
    lb = acme_caller.create(
        "/load-balancers",
        {
            "network_id": web["id"],
            "name": "lb",
            "vip": "10.0.0.100",
            "protocol": "tcp",
            "port": 80,
            "backends": [{"port_id": ports["c"]["id"], "port": 8080}],
        },
    )
    return {"acme": acme_caller, "globex": globex_caller, "ports": ports, "lb": lb}


def _diagnose(caller: Any, **body: Any) -> Any:
    return caller.post("/diagnose", json=body)


def test_endpoints_by_id_vm_name_address_and_vip(api: Any, fabric: dict[str, Any]) -> None:
    acme, ports = fabric["acme"], fabric["ports"]
    with api.unchanged():
        by_name = _diagnose(acme, src="c", dst="vm-a")
        assert by_name.status_code == 200, by_name.text
        found = by_name.json()
        assert found["src"]["id"] == ports["c"]["id"] and found["dst"]["id"] == ports["a"]["id"]
        assert (found["reachable"], found["cause"]) == (False, "port_not_bound")
        assert found["fix"] and ports["c"]["id"] in found["explanation"]
        # a is bound to h1, whose OVSDB socket does not exist here.
        bound = _diagnose(acme, src="vm-a", dst="c").json()
        assert bound["cause"] == "ovsdb_unreachable" and bound["findings"][0]["host"] == "h1"

        qualified = _diagnose(acme, src=ports["a"]["id"], dst="10.0.0.10@db").json()
        assert qualified["dst"]["id"] == ports["b"]["id"]
        assert qualified["cause"] == "different_networks", qualified

        vip = _diagnose(acme, src="a", dst="10.0.0.100", proto="tcp", port=80).json()
        assert vip["dst"]["kind"] == "vip" and vip["dst"]["id"] == fabric["lb"]["id"]
        by_lb_id = _diagnose(acme, src="a", dst=fabric["lb"]["id"], proto="tcp").json()
        assert by_lb_id["dst"]["ip"] == "10.0.0.100" and by_lb_id["port"] == 80


def test_ambiguous_or_impossible_requests_are_precise_problems(
    api: Any, fabric: dict[str, Any]
) -> None:
    acme = fabric["acme"]
    with api.unchanged():
        api.problem(
            _diagnose(acme, src="a", dst="10.0.0.10"), 422, "several networks", "10.0.0.10@NETWORK"
        )
        api.problem(_diagnose(acme, src="10.0.0.100", dst="a"), 422, "cannot be a source")
        api.problem(_diagnose(acme, src="a", dst="vm-a"), 422, "the source itself")
        api.problem(_diagnose(acme, src="a", dst="c", proto="tcp"), 422, "port")
        api.problem(
            _diagnose(acme, src="a", dst="10.0.0.100", proto="udp", port=80),
            422,
            "listens on tcp port 80",
        )
        api.problem(_diagnose(acme, src="a", dst="c", proto="sctp"), 422, "proto")
        api.problem(_diagnose(acme, src="a", dst="c", port=70000), 422, "port")
        api.problem(_diagnose(acme, src="a", dst="c", extra=1), 422, "extra")
        api.problem(_diagnose(acme, src="a", dst="c\u0000"), 422, "NUL")
        api.problem(_diagnose(acme, src="a", dst="nowhere"), 404, "'nowhere'")
        api.problem(_diagnose(acme, src="a", dst="10.0.0.10@nonet"), 404, "no network")
        api.problem(_diagnose(api.caller(None), src="a", dst="c"), 401)


def test_another_tenants_object_answers_like_a_missing_one(
    api: Any, fabric: dict[str, Any]
) -> None:
    globex, ports = fabric["globex"], fabric["ports"]
    missing = "00000000-0000-4000-8000-000000000000"
    with api.unchanged():
        theirs = api.problem(_diagnose(globex, src="g", dst=ports["a"]["id"]), 404)
        nothing = api.problem(_diagnose(globex, src="g", dst=missing), 404)
        assert theirs["detail"].replace(ports["a"]["id"], "X") == nothing["detail"].replace(
            missing, "X"
        )
        # Their own 10.0.0.10 is g itself: acme's ports with that address do not exist here.
        api.problem(_diagnose(globex, src="g", dst="10.0.0.10"), 422, "the source itself")
        api.problem(_diagnose(globex, src="g", dst="vm-a"), 404, "'vm-a'")
        api.problem(_diagnose(globex, src="g", dst=fabric["lb"]["id"]), 404)
