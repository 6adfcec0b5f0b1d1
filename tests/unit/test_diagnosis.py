"""The connectivity diagnosis's pure logic: the parsers of the switch tools' output (fed
with output captured from OVS 3.1), the intended path, and one verdict per cause."""

# ruff: noqa: E501  (the tools' output below is quoted verbatim)

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from controller.core.diagnosis import Endpoint, Expectations, HostObservation, diagnose, plan_path
from controller.core.diagnosis.observed import (
    BridgeRow,
    ControllerRow,
    DatapathDrop,
    InterfaceRow,
    OvsdbRows,
    TraceResult,
    TraceStep,
    ovs_flow_text,
    parse_datapath_drops,
    parse_dump_flows,
    parse_ovsdb_select,
    parse_trace,
)
from controller.core.diagnosis.verdict import Hop, PathPlan, Verdict
from controller.core.model import (
    BackendSpec,
    HostSpec,
    LoadBalancerSpec,
    NetworkSpec,
    PortSpec,
    Snapshot,
)
from controller.core.pipeline.context import tunnel_interface_name

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

# ---- the tools' output, as OVS 3.1 printed it in the lab ----------------------------------------

VLAN_TRACE = """\
Flow: icmp,in_port=3,vlan_tci=0x0000,dl_src=02:63:c9:db:72:32,dl_dst=02:a1:7c:88:44:69

bridge("br-int")
----------------
 0. in_port=3,vlan_tci=0x0000/0x1fff,dl_src=02:63:c9:db:72:32, priority 100, cookie 0xfaba83a9daca4e8
    set_field:0x1->reg5
    write_metadata:0x1
    goto_table:1
 1. ip,in_port=3,nw_src=10.1.0.11, priority 100, cookie 0xfab1efee6cde23d
    goto_table:2
 2. priority 0, cookie 0xfabcd0a42b79f25
    goto_table:3
 3. icmp,metadata=0x1, priority 100, cookie 0xfabb396c666e947
    ct(table=6,zone=48667,nat)
    nat
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 6.

Final flow: icmp,reg5=0x1,metadata=0x1,in_port=3
Megaflow: recirc_id=0,eth,icmp,in_port=3
Datapath actions: ct(zone=48667,nat),recirc(0x4)

===============================================================================
recirc(0x4) - resume conntrack with default ct_state=trk|new (use --ct-next to customize)
===============================================================================

Flow: recirc_id=0x4,ct_state=new|trk,ct_zone=48667,eth,icmp,reg5=0x1,metadata=0x1,in_port=3

bridge("br-int")
----------------
    thaw
        Resuming from table 6
 6. priority 0, cookie 0xfab7bc444a73909
    goto_table:8
 8. reg5=0x1,metadata=0x1,dl_dst=02:a1:7c:88:44:69, priority 100, cookie 0xfab78d51711b1a3
    push_vlan:0x8100
    set_field:4097->vlan_vid
    output:1

Final flow: recirc_id=0x4,ct_state=new|trk
Megaflow: recirc_id=0x4,eth,ip,in_port=3
Datapath actions: push_vlan(vid=1,pcp=0),4
"""

NO_ROUTE_TRACE = """\
bridge("br-int")
----------------
 8. reg5=0x1,metadata=0x1000001,dl_dst=02:81:10:69:77:07, priority 100, cookie 0xfab0a97763a86fd
    set_field:0x1->tun_id
    output:2
     -> output to native tunnel
     >> native tunnel routing failed

bridge("br-phy")
----------------
 0. priority 0
    NORMAL

Final flow: icmp,reg5=0x1,tun_id=0x1
Megaflow: recirc_id=0,eth,icmp,in_port=5
Datapath actions: drop
"""

DPCTL = (
    "flow-dump from the main thread:\n"
    "ufid:a26989bd, skb_priority(0/0),recirc_id(0),in_port(h1-a1),packet_type(ns=0,id=0),"
    "eth(src=02:63:c9:db:72:32,dst=02:a1:7c:88:44:69/00:00:00:00:00:00),eth_type(0x0800),"
    "ipv4(src=10.1.0.77/255.255.255.192,dst=10.1.0.13/0.0.0.0,proto=1,tos=0/0,ttl=64/0,frag=no),"
    "icmp(type=8/0,code=0/0), packets:4, bytes:392, used:0.200s, dp:ovs, actions:drop\n"
    "ufid:d5743112, recirc_id(0),in_port(h1-b1),eth(src=02:26:5f:8d:06:2d,dst=0e:73:12:86:bd:bf"
    "/00:00:00:00:00:00),eth_type(0x0800),ipv4(src=10.1.0.12,dst=10.1.0.101,proto=6,frag=no),"
    " packets:136, bytes:7344, used:0.402s, flags:R., dp:ovs, actions:userspace(pid=0)\n"
)

DUMP = """\
OFPST_FLOW reply (OF1.3) (xid=0x2):
 cookie=0xfab245caba85671, duration=38.157s, table=0, n_packets=1, n_bytes=102, priority=100,in_port=1,dl_vlan=1 actions=pop_vlan,set_field:0x2->reg5,write_metadata:0x1,goto_table:3
 cookie=0xfab47b039964db7, duration=39.540s, table=0, n_packets=0, n_bytes=0, priority=0 actions=drop
"""


def test_trace_steps_follow_recirculation_and_outputs() -> None:
    trace = parse_trace(VLAN_TRACE, "br-int")
    assert [(s.table, s.cookie) for s in trace.steps] == [
        (0, 0xFABA83A9DACA4E8),
        (1, 0xFAB1EFEE6CDE23D),
        (2, 0xFABCD0A42B79F25),
        (3, 0xFABB396C666E947),
        (6, 0xFAB7BC444A73909),
        (8, 0xFAB78D51711B1A3),
    ]
    assert trace.steps[0].match == "in_port=3,vlan_tci=0x0000/0x1fff,dl_src=02:63:c9:db:72:32"
    assert trace.steps[-1].actions == ("push_vlan:0x8100", "set_field:4097->vlan_vid", "output:1")
    assert trace.outputs == (1,)
    assert trace.datapath_actions == "push_vlan(vid=1,pcp=0),4"
    assert not trace.dropped and trace.errors == ()


def test_trace_of_an_unroutable_tunnel_says_why_and_ignores_other_bridges() -> None:
    trace = parse_trace(NO_ROUTE_TRACE, "br-int")
    assert [s.table for s in trace.steps] == [8]  # br-phy's step is not ours
    assert trace.errors == ("native tunnel routing failed",)
    assert trace.datapath_actions == "drop"


def test_datapath_drops_keep_the_sources_the_switch_matched() -> None:
    assert parse_datapath_drops(DPCTL) == (
        DatapathDrop("h1-a1", "02:63:c9:db:72:32", "10.1.0.77", None, 4),
    )


def test_dump_flows_are_read_with_cookie_table_priority_and_actions() -> None:
    first, second = parse_dump_flows(DUMP)
    assert (first.cookie, first.table, first.priority) == (0xFAB245CABA85671, 0, 100)
    assert first.match == "in_port=1,dl_vlan=1"
    assert first.actions == "pop_vlan,set_field:0x2->reg5,write_metadata:0x1,goto_table:3"
    assert (second.priority, second.match, second.actions) == (0, "", "drop")


def test_ovsdb_rows_tie_interfaces_to_their_bridge() -> None:
    reply = json.loads(
        """[{"rows":[{"name":"br-int","fail_mode":"secure","datapath_type":"netdev",
        "protocols":"OpenFlow13","other_config":["map",[["datapath-id","0000d324ca5f44f1"]]],
        "controller":["uuid","c1"],"ports":["set",[["uuid","p1"]]]}]},
        {"rows":[{"_uuid":["uuid","c1"],"target":"unix:/x/s.sock","is_connected":false,
        "status":["map",[["sec_since_disconnect","7"],["state","BACKOFF"]]]}]},
        {"rows":[{"_uuid":["uuid","p1"],"name":"tap1","interfaces":["uuid","i1"]}]},
        {"rows":[{"_uuid":["uuid","i1"],"name":"tap1","ofport":-1,"link_state":["set",[]],
        "admin_state":"up","error":"could not open network device tap1 (No such device)",
        "type":"","options":["map",[]]},
        {"_uuid":["uuid","i2"],"name":"loose","ofport":3,"link_state":"up","admin_state":"up",
        "error":["set",[]],"type":"","options":["map",[]]}]}]"""
    )
    rows = parse_ovsdb_select(reply)
    assert rows.bridges["br-int"] == BridgeRow(
        "br-int", "secure", "netdev", ("OpenFlow13",), "0000d324ca5f44f1", ("unix:/x/s.sock",)
    )
    assert rows.interfaces == {
        "tap1": InterfaceRow(
            "tap1",
            "br-int",
            None,
            None,
            "up",
            "could not open network device tap1 (No such device)",
        )
    }
    assert rows.controllers["unix:/x/s.sock"] == ControllerRow(
        "unix:/x/s.sock", False, 7, None, "BACKOFF", None
    )


def test_packets_are_spelled_for_ofproto_trace() -> None:
    packet = {
        "in_port": 3,
        "eth_src": 0x0263C9DB7232,
        "eth_dst": 0x02A17C884469,
        "eth_type": 0x0800,
        "ipv4_src": 0x0A01000B,
        "ipv4_dst": 0x0A01000D,
        "ip_proto": 6,
        "tcp_src": 40000,
        "tcp_dst": 80,
        "tunnel_id": 5,
    }
    assert ovs_flow_text(packet) == (
        "tcp,dl_dst=02:a1:7c:88:44:69,dl_src=02:63:c9:db:72:32,in_port=3,nw_dst=10.1.0.13,"
        "nw_src=10.1.0.11,tp_dst=80,tp_src=40000,tun_id=0x5,nw_ttl=64"
    )


# ---- a fabric to reason about -----------------------------------------------------------------

H1, H2 = "00000000-0000-0000-0000-0000000000a1", "00000000-0000-0000-0000-0000000000a2"
HOSTS = (
    HostSpec(H1, "h1", "unix:/h1/db.sock", tunnel_ip="198.18.0.1", uplink="trunk0"),
    HostSpec(H2, "h2", "unix:/h2/db.sock", tunnel_ip="198.18.0.2", uplink="trunk0"),
)
NV = NetworkSpec("nv", "t", "nv", "vlan", 10)
NX = NetworkSpec("nx", "t", "nx", "vxlan", 5000)
NU = NetworkSpec("nu", "u", "nu", "vxlan", 6000)
PORTS = {
    "a": PortSpec("a", "nv", "02:00:00:00:00:0a", ("10.1.0.10",), H1, "h1-a", "vm-a"),
    "b": PortSpec("b", "nv", "02:00:00:00:00:0b", ("10.1.0.11",), H1, "h1-b", "vm-b"),
    "c": PortSpec("c", "nv", "02:00:00:00:00:0c", ("10.1.0.12",), H2, "h2-c", "vm-c"),
    "x": PortSpec("x", "nx", "02:00:00:00:00:1a", ("10.2.0.10",), H1, "h1-x", "vm-x"),
    "y": PortSpec("y", "nx", "02:00:00:00:00:1b", ("10.2.0.11",), H2, "h2-y", "vm-y"),
    "u": PortSpec("u", "nu", "02:00:00:00:00:2a", ("10.1.0.10",), H2, "h2-u", "vm-u"),
    "lone": PortSpec("lone", "nv", "02:00:00:00:00:0f", ("10.1.0.50",)),
}
LB = LoadBalancerSpec(
    "lb", "nv", "10.1.0.100", "tcp", 80, (BackendSpec("10.1.0.12", 8080, 1, port_id="c"),)
)
SNAPSHOT = Snapshot(1, HOSTS, (NV, NX, NU), tuple(PORTS.values()), (LB,))
NETWORKS = {n.id: n for n in SNAPSHOT.networks}


def _rows(*names: str, bridge: str = "br-int") -> dict[str, InterfaceRow]:
    return {
        name: InterfaceRow(name, bridge, number, "up", "up", None)
        for number, name in enumerate(names, start=1)
    }


def _ovsdb(host_id: str, **changes: object) -> OvsdbRows:
    local = [p.interface for p in PORTS.values() if p.host_id == host_id and p.interface]
    peer = H2 if host_id == H1 else H1
    interfaces = {
        **_rows("trunk0", tunnel_interface_name(peer), *local),
        **_rows("ul0", bridge="br-phy"),
    }
    bridge = BridgeRow("br-int", "secure", "netdev", ("OpenFlow13",), None, ("unix:ctl",))
    rows = OvsdbRows({"br-int": bridge}, interfaces, {})
    return dataclasses.replace(rows, **changes)  # type: ignore[arg-type]


EXPECT = Expectations(bridge="br-int", datapath_type="netdev")


def endpoint(name: str, **changes: object) -> Endpoint:
    if name == "vip":
        return Endpoint("vip", NV, LB.vip, load_balancer=LB)
    port = PORTS[name]
    found = Endpoint(name, NETWORKS[port.network_id], port.ips[0], port=port)
    return dataclasses.replace(found, **changes)  # type: ignore[arg-type]


def _steps(hop: Hop) -> tuple[TraceStep, ...]:
    """The trace steps a switch that agrees with `hop` reports."""
    return tuple(TraceStep(s.table, s.cookie, s.priority, "", ()) for s in hop.steps)


def _agreeing_traces(plan: PathPlan) -> dict[int, TraceResult]:
    return {
        hop.number: TraceResult(
            steps=_steps(hop),
            outputs=() if hop.out_port is None else (hop.out_port,),
            groups=hop.groups,
            errors=(),
            datapath_actions="1",
        )
        for hop in plan.hops
    }


class World:
    """Observations of h1 and h2 as a healthy lab gives them; tests break one thing."""

    def __init__(self) -> None:
        self.ovsdb = {H1: _ovsdb(H1), H2: _ovsdb(H2)}
        self.observation: dict[str, HostObservation] = {}

    def plan(
        self,
        src: Endpoint,
        dst: Endpoint,
        *,
        proto: str = "icmp",
        port: int | None = None,
        snapshot: Snapshot = SNAPSHOT,
    ) -> PathPlan:
        """The path of a healthy lab with these bridges' interfaces."""
        return plan_path(
            snapshot,
            src,
            dst,
            proto=proto,  # type: ignore[arg-type]
            dst_port=port,
            interfaces={h: rows.on_bridge("br-int") for h, rows in self.ovsdb.items()},
        )

    def run(
        self,
        src: Endpoint,
        dst: Endpoint,
        *,
        proto: str = "icmp",
        port: int | None = None,
        host_changes: Mapping[str, Mapping[str, object]] | None = None,
        trace_changes: Mapping[int, TraceResult] | None = None,
        snapshot: Snapshot = SNAPSHOT,
    ) -> Verdict:
        plan = None
        if src.network.id == dst.network.id and src.port is not None and src.port.host_id:
            plan = self.plan(src, dst, proto=proto, port=port, snapshot=snapshot)
        traces = {**(_agreeing_traces(plan) if plan else {}), **(trace_changes or {})}
        observations = {}
        for host_id, rows in self.ovsdb.items():
            seen = HostObservation(
                host_id,
                ovsdb=rows,
                flows=(),
                traces={
                    n: t for n, t in traces.items() if plan and plan.hops[n - 1].host_id == host_id
                },
                drops=(),
                routes={},
            )
            observations[host_id] = dataclasses.replace(
                seen,
                **(host_changes or {}).get(host_id, {}),  # type: ignore[arg-type]
            )
        return diagnose(
            snapshot, src, dst, plan=plan, observations=observations, expect=EXPECT, now=NOW
        )


def _cause(verdict: Verdict) -> str | None:
    return None if verdict.cause is None else verdict.cause.cause


# ---- the healthy paths ------------------------------------------------------------------------


def test_same_host_is_one_hop_out_of_the_destination_port() -> None:
    verdict = World().run(endpoint("a"), endpoint("b"))
    assert verdict.reachable and verdict.cause is None
    (hop,) = verdict.plan.hops
    assert (hop.host_id, hop.egress, hop.out_interface, hop.delivered_port_id) == (
        H1,
        "port",
        "h1-b",
        "b",
    )
    assert next(s.table_name for s in hop.steps) == "classify"
    assert verdict.switch_agrees == {1: True}


def test_across_vlan_leaves_by_the_uplink_tagged_and_arrives_on_the_other_host() -> None:
    verdict = World().run(endpoint("a"), endpoint("c"))
    assert verdict.reachable
    first, second = verdict.plan.hops
    assert (first.egress, first.out_interface, first.segment, first.next_host_id) == (
        "uplink",
        "trunk0",
        10,
        H2,
    )
    assert second.packet["vlan_vid"] == 0x1000 | 10 and second.in_interface == "trunk0"
    assert (second.host_id, second.egress, second.delivered_port_id) == (H2, "port", "c")


def test_across_vxlan_leaves_by_the_tunnel_to_the_peer() -> None:
    verdict = World().run(endpoint("x"), endpoint("y"))
    assert verdict.reachable
    first, second = verdict.plan.hops
    assert (first.egress, first.out_interface, first.segment, first.remote_ip) == (
        "tunnel",
        tunnel_interface_name(H2),
        5000,
        "198.18.0.2",
    )
    assert second.packet["tunnel_id"] == 5000
    assert second.in_interface == tunnel_interface_name(H1)
    assert second.delivered_port_id == "y"


def test_through_a_vip_reaches_the_backend_natted() -> None:
    verdict = World().run(endpoint("a"), endpoint("vip"), proto="tcp", port=80)
    assert verdict.reachable, verdict.findings
    first, second = verdict.plan.hops
    assert first.groups, "the select group of the load balancer"
    assert second.delivered_port_id == "c"
    assert second.packet["ipv4_dst"] == 0x0A01000C and second.packet["tcp_dst"] == 8080


# ---- one verdict per cause ----------------------------------------------------------------------


def test_1_different_tenants_and_networks_are_isolated_by_design() -> None:
    world = World()
    assert _cause(world.run(endpoint("a"), endpoint("u"))) == "different_networks"
    verdict = world.run(endpoint("a"), endpoint("y"))
    assert _cause(verdict) == "different_networks" and "networks" in verdict.findings[0].explanation


def test_2_an_unbound_port_and_an_interface_off_the_bridge() -> None:
    world = World()
    assert _cause(world.run(endpoint("a"), endpoint("lone"))) == "port_not_bound"
    interfaces = dict(world.ovsdb[H1].interfaces)
    del interfaces["h1-b"]
    world.ovsdb[H1] = dataclasses.replace(world.ovsdb[H1], interfaces=interfaces)
    verdict = world.run(endpoint("a"), endpoint("b"))
    assert _cause(verdict) == "port_not_bound" and "h1-b" in verdict.findings[0].explanation


def test_3_a_vm_that_does_not_run() -> None:
    verdict = World().run(endpoint("a"), endpoint("b", vm_state="shut off"))
    assert _cause(verdict) == "vm_not_running" and "shut off" in verdict.findings[0].explanation


def test_4_frames_from_another_source_are_named() -> None:
    drops = (DatapathDrop("h1-a", "02:00:00:00:00:0a", "10.1.0.77", None, 5),)
    verdict = World().run(endpoint("a"), endpoint("b"), host_changes={H1: {"drops": drops}})
    assert _cause(verdict) == "source_address_mismatch"
    assert "10.1.0.77" in verdict.findings[0].explanation
    spoofed_mac = (DatapathDrop("h1-a", "02:00:00:00:99:99", None, None, 2),)
    verdict = World().run(endpoint("a"), endpoint("b"), host_changes={H1: {"drops": spoofed_mac}})
    assert "02:00:00:00:99:99" in verdict.findings[0].explanation
    # b's address: a conflict, named as one.
    taken = (DatapathDrop("h1-a", "02:00:00:00:00:0a", "10.1.0.11", None, 3),)
    verdict = World().run(endpoint("a"), endpoint("b"), host_changes={H1: {"drops": taken}})
    assert "port b's: a conflict" in verdict.findings[0].explanation
    # u's address in another tenant's network is not named (it is no conflict here).
    elsewhere = (DatapathDrop("h1-a", "02:00:00:00:00:2a", None, None, 1),)
    verdict = World().run(endpoint("a"), endpoint("b"), host_changes={H1: {"drops": elsewhere}})
    assert "(1 packets)" in verdict.findings[0].explanation
    assert "port u" not in verdict.findings[0].explanation
    # Drops of the port's own addresses (IPv6, say) are no spoofing.
    own = (DatapathDrop("h1-a", "02:00:00:00:00:0a", None, None, 9),)
    assert World().run(endpoint("a"), endpoint("b"), host_changes={H1: {"drops": own}}).reachable


def test_5_a_disconnected_switch_says_since_when() -> None:
    since = NOW - timedelta(seconds=42)
    verdict = World().run(
        endpoint("a"),
        endpoint("c"),
        host_changes={H2: {"openflow_connected": False, "status_at": since}},
    )
    assert _cause(verdict) == "switch_disconnected"
    assert "42 s ago" in verdict.findings[0].explanation and verdict.findings[0].host_id == H2


def test_6_an_unreachable_ovsdb() -> None:
    verdict = World().run(
        endpoint("a"),
        endpoint("b"),
        host_changes={H1: {"ovsdb": None, "ovsdb_error": "did not answer within 1 s"}},
    )
    assert _cause(verdict) == "ovsdb_unreachable"


def test_7_a_missing_flow_is_named() -> None:
    world = World()
    plan = world.plan(endpoint("a"), endpoint("b"))
    (hop,) = plan.hops
    # The switch lacks port security's flow for a's address: the frame hits the table miss.
    steps = list(_steps(hop))
    table_miss = next(f for f in plan.config_by_host[H1].flows if f.table == 1 and f.priority == 0)
    from controller.core.ofmsg import encode_flow

    trace = TraceResult(
        (steps[0], TraceStep(1, encode_flow(table_miss).cookie, 0, "", ())), (), (), (), "drop"
    )
    verdict = world.run(endpoint("a"), endpoint("b"), trace_changes={1: trace})
    assert _cause(verdict) == "flows_differ"
    assert "missing" in verdict.findings[0].explanation
    assert verdict.switch_agrees == {1: False}


def test_7_a_flow_modified_by_hand_is_named() -> None:
    world = World()
    plan = world.plan(endpoint("a"), endpoint("b"))
    (hop,) = plan.hops
    steps = _steps(hop)
    from controller.core.diagnosis.observed import DumpedFlow

    last = hop.steps[-1]
    dumped = (DumpedFlow(last.cookie, last.table, last.priority, "", "drop", 3),)
    verdict = world.run(
        endpoint("a"),
        endpoint("b"),
        trace_changes={1: TraceResult(steps, (), (), (), "drop")},
        host_changes={H1: {"flows": dumped}},
    )
    assert _cause(verdict) == "flows_differ" and "modified" in verdict.findings[0].explanation


def test_8_bridge_settings_drift() -> None:
    world = World()
    bridge = dataclasses.replace(world.ovsdb[H1].bridges["br-int"], fail_mode="standalone")
    world.ovsdb[H1] = dataclasses.replace(world.ovsdb[H1], bridges={"br-int": bridge})
    verdict = world.run(endpoint("a"), endpoint("b"))
    assert _cause(verdict) == "bridge_settings_drifted" and not verdict.reachable
    assert "fail_mode=standalone" in verdict.findings[0].explanation


def test_9_interface_error_or_link_down() -> None:
    world = World()
    interfaces = dict(world.ovsdb[H1].interfaces)
    interfaces["h1-b"] = dataclasses.replace(interfaces["h1-b"], link_state="down")
    world.ovsdb[H1] = dataclasses.replace(world.ovsdb[H1], interfaces=interfaces)
    assert _cause(world.run(endpoint("a"), endpoint("b"))) == "interface_down"
    interfaces["h1-b"] = dataclasses.replace(
        interfaces["h1-b"], ofport=None, error="could not open network device h1-b (No such device)"
    )
    world.ovsdb[H1] = dataclasses.replace(world.ovsdb[H1], interfaces=interfaces)
    verdict = world.run(endpoint("a"), endpoint("b"))
    assert _cause(verdict) == "interface_down" and "vanished" in verdict.findings[0].explanation
    # As OVS reports a deleted veth until it reconfigures: ofport kept, ifindex 0, no error.
    interfaces["h1-b"] = dataclasses.replace(interfaces["h1-b"], ofport=2, error=None, ifindex=0)
    world.ovsdb[H1] = dataclasses.replace(world.ovsdb[H1], interfaces=interfaces)
    verdict = world.run(endpoint("a"), endpoint("b"))
    assert _cause(verdict) == "interface_down" and "vanished" in verdict.findings[0].explanation
    # A tunnel has no device of its own: ifindex 0 is normal there.
    assert not dataclasses.replace(interfaces["h1-b"], type="vxlan").device_gone


def test_10_trunk_down_or_no_route_to_the_vxlan_peer() -> None:
    world = World()
    interfaces = dict(world.ovsdb[H2].interfaces)
    interfaces["trunk0"] = dataclasses.replace(interfaces["trunk0"], link_state="down")
    world.ovsdb[H2] = dataclasses.replace(world.ovsdb[H2], interfaces=interfaces)
    assert _cause(world.run(endpoint("a"), endpoint("c"))) == "underlay_down"
    verdict = World().run(
        endpoint("x"),
        endpoint("y"),
        host_changes={H1: {"routes": {"198.18.0.2": "ovs-vswitchd: Not found"}}},
    )
    assert _cause(verdict) == "underlay_down" and "198.18.0.2" in verdict.findings[0].explanation


def test_10_the_trace_says_the_tunnel_cannot_be_routed() -> None:
    world = World()
    plan = world.plan(endpoint("x"), endpoint("y"))
    first = plan.hops[0]
    steps = _steps(first)
    trace = TraceResult(
        steps, (first.out_port or 0,), (), ("native tunnel routing failed",), "drop"
    )
    verdict = world.run(endpoint("x"), endpoint("y"), trace_changes={1: trace})
    assert _cause(verdict) == "underlay_down"


def test_11_a_vip_without_healthy_backend() -> None:
    sick = dataclasses.replace(LB, backends=(dataclasses.replace(LB.backends[0], healthy=False),))
    snapshot = dataclasses.replace(SNAPSHOT, load_balancers=(sick,))
    dst = Endpoint("vip", NV, sick.vip, load_balancer=sick)
    verdict = World().run(endpoint("a"), dst, proto="tcp", port=80, snapshot=snapshot)
    assert _cause(verdict) == "no_healthy_backend"


def test_12_a_foreign_flow_dropping_the_frame() -> None:
    world = World()
    plan = world.plan(endpoint("a"), endpoint("b"))
    steps = list(_steps(plan.hops[0]))
    steps[-1] = TraceStep(8, 0x1234, 300, "dl_dst=02:00:00:00:00:0b", ())
    verdict = world.run(
        endpoint("a"),
        endpoint("b"),
        trace_changes={1: TraceResult(tuple(steps), (), (), (), "drop")},
    )
    assert _cause(verdict) == "foreign_flow_drop" and "0x0000000000001234" in (
        verdict.findings[0].explanation
    )


def test_the_switch_forwarding_elsewhere_with_unchanged_flows_is_a_finding() -> None:
    world = World()
    plan = world.plan(endpoint("a"), endpoint("b"))
    steps = _steps(plan.hops[0])
    verdict = world.run(
        endpoint("a"), endpoint("b"), trace_changes={1: TraceResult(steps, (99,), (), (), "99")}
    )
    assert _cause(verdict) == "trace_disagrees"


def test_10_hosts_without_a_way_between_them_for_the_network() -> None:
    # h2 has no tunnel_ip: h1 computes no way to it for the VXLAN network.
    hosts = (HOSTS[0], dataclasses.replace(HOSTS[1], tunnel_ip=None))
    snapshot = dataclasses.replace(SNAPSHOT, hosts=hosts)
    verdict = World().run(endpoint("x"), endpoint("y"), snapshot=snapshot)
    assert _cause(verdict) == "underlay_down"
    assert "no way to host" in verdict.findings[0].explanation
    assert verdict.findings[0].host_id == H1
