"""`ovs-fabric status`: what it picks out of the topology as needing attention."""

from __future__ import annotations

from typing import Any

import pytest

from api.cli.status import summarize

pytestmark = pytest.mark.unit


def _port(name: str, status: str, host_id: str | None) -> dict[str, Any]:
    return {"id": f"id-{name}", "name": name, "network_id": "n1", "status": status,
            "binding": {"host_id": host_id, "interface": f"tap-{name}" if host_id else None}}


def _backend(ip: str, health: str) -> dict[str, Any]:
    return {"ip": ip, "port": 80, "weight": 1, "health": health}


def test_only_bound_ports_not_active_and_backends_not_healthy_are_listed() -> None:
    topology = {
        "revision": 7,
        "hosts": [{"id": "h1", "name": "hv1", "ovsdb_connected": True, "openflow_connected": False,
                   "datapath_id": None, "flow_count": None, "group_count": None,
                   "last_error": "OpenFlow: switch not connected"}],
        "tenants": [{"id": "t1"}],
        "networks": [{"id": "n1", "name": "web"}],
        "ports": [_port("up", "ACTIVE", "h1"), _port("down", "DOWN", "h1"),
                  _port("unbound", "DOWN", None), _port("elsewhere", "ERROR", "gone-host")],
        "load_balancers": [{"name": "http", "network_id": "n1", "backends": [
            _backend("10.0.0.1", "healthy"), _backend("10.0.0.2", "unhealthy"),
            _backend("10.0.0.3", "unknown")]}],
    }

    summary = summarize(topology)

    assert [(p["name"], p["host"], p["status"]) for p in summary["ports_not_active"]] == [
        ("down", "hv1", "DOWN"), ("elsewhere", "gone-hos", "ERROR")]
    assert [(b["load_balancer"], b["network"], b["health"]) for b in summary["backends_down"]] \
        == [("http", "web", "unhealthy"), ("http", "web", "unknown")]
    assert summary["hosts"][0]["last_error"] == "OpenFlow: switch not connected"
    assert summary["counts"] == {"tenants": 1, "networks": 1, "ports": 4, "load_balancers": 1}
