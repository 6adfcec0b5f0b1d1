"""`ovs-fabric diagnose`: how an answer of POST /diagnose reads in a terminal."""

from __future__ import annotations

from typing import Any

import pytest

from api.cli.diagnose import show

pytestmark = pytest.mark.unit


def _side(asked: str, host: str | None, kind: str = "port") -> dict[str, Any]:
    return {"asked": asked, "kind": kind, "id": f"id-{asked}", "network_id": "n1",
            "network": "web", "ip": "10.0.0.1", "host": host,
            "interface": f"{host}-{asked}" if host else None, "vm_state": None}


def _hop(number: int, host: str, egress: str, trace: str, **out: Any) -> dict[str, Any]:
    return {"hop": number, "host": host, "host_id": f"id-{host}", "bridge": "br-int",
            "in_interface": "trunk0", "in_port": 1,
            "tables": [{"table": 0, "name": "classify", "priority": 100, "cookie": "0xfab1"}],
            "groups": [], "egress": egress, "out_interface": out.get("out_interface"),
            "out_port": out.get("out_port"), "next_host": out.get("next_host"),
            "segment": out.get("segment"), "remote_ip": out.get("remote_ip"),
            "port_id": out.get("port_id"), "switch_trace": trace}


def test_a_failing_answer_shows_the_path_the_cause_why_and_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show({
        "reachable": False, "src": _side("a1", "h1"), "dst": _side("c1", "h2"),
        "proto": "tcp", "port": 80,
        "path": [
            _hop(1, "h1", "tunnel", "agrees", out_interface="vx1", out_port=2, segment=7,
                 remote_ip="198.18.0.2", next_host="h2"),
            _hop(2, "h2", "port", "disagrees", out_interface="h2-c1", out_port=3,
                 port_id="id-c1"),
        ],
        "cause": "foreign_flow_drop", "explanation": "Dropped by cookie 0x1234.",
        "fix": "ovs-ofctl del-flows br-int cookie=0x1234/-1",
        "findings": [
            {"cause": "foreign_flow_drop", "explanation": "Dropped by cookie 0x1234.",
             "fix": "...", "host": "h2", "details": []},
            {"cause": "flows_differ", "explanation": "And more.", "fix": "...", "host": "h2",
             "details": []},
        ],
    })  # fmt: skip
    out = capsys.readouterr().out
    assert "to   c1 (port 10.0.0.1 in web on h2/h2-c1), tcp/80" in out
    assert "out tunnel vx1 (VNI 7, 198.18.0.2) to host h2" in out
    assert "switch trace disagrees" in out and "0:classify[0xfab1]" in out
    assert "NOT reachable: foreign_flow_drop" in out
    assert "fix: ovs-ofctl del-flows br-int cookie=0x1234/-1" in out
    assert "also: flows_differ: And more." in out


def test_a_reachable_answer_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    show({
        "reachable": True, "src": _side("a1", "h1"), "dst": _side("vip", None, kind="vip"),
        "proto": "icmp", "port": None,
        "path": [_hop(1, "h1", "port", "unavailable", out_interface="h1-b1", out_port=4,
                      port_id="id-b1")],
        "cause": None, "explanation": None, "fix": None, "findings": [],
    })  # fmt: skip
    out = capsys.readouterr().out
    assert "to   vip (VIP 10.0.0.1 in web), icmp" in out
    assert "no switch trace" in out and out.rstrip().endswith("reachable")
