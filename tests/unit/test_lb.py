"""Load-balancer flows and groups, checked by packets through the simulator.

Host A (this datapath) holds the client (port 3) and backend b1 (port 4) of
tenant 1's VXLAN network "web"; backends b2 and b3 sit on host B (tunnel port
10). Tenant 2's network "copy" reuses the addresses; its port x is on A (port 5).
The load balancer: VIP 10.1.0.100 tcp/80 -> b1, b2, b3 port 8080, weights 1:1:2.
"""

from __future__ import annotations

import dataclasses

import pytest

from controller.core import model
from controller.core.flows import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_REPLY,
    CT_TRACKED,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    IP_PROTO_ICMP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    OFPP_CONTROLLER,
    Ct,
    GroupAction,
    Output,
    ip_to_int,
    mac_to_int,
)
from controller.core.pipeline import DatapathConfig, compute_datapath
from controller.core.pipeline.context import network_metadata, tunnel_interface_name
from controller.core.pipeline.load_balancer import PROBE_PORT_BASE, conntrack_zones, vip_mac
from controller.core.pipeline.tables import TABLE_LB, TABLE_LB_CT, TABLE_LB_REWRITE
from tests.support.flowsim import FlowSimulator, fixed_state

pytestmark = pytest.mark.unit

HOST_A = "a0000000-0000-4000-8000-00000000000a"
HOST_B = "b0000000-0000-4000-8000-00000000000b"
CLIENT_PORT, B1_PORT, X_PORT, TUNNEL_B = 3, 4, 5, 10

WEB = model.NetworkSpec("net-web", "tenant-1", "web", "vxlan", 5001, "10.1.0.0/24")
COPY = model.NetworkSpec("net-copy", "tenant-2", "copy", "vxlan", 5002, "10.1.0.0/24")


def _port(name: str, net: model.NetworkSpec, mac: str, ip: str, host: str) -> model.PortSpec:
    return model.PortSpec(f"port-{name}", net.id, mac, (ip,), host, f"tap-{name}")


CLIENT = _port("client", WEB, "02:00:00:00:00:10", "10.1.0.10", HOST_A)
B1 = _port("b1", WEB, "02:00:00:00:00:11", "10.1.0.11", HOST_A)
B2 = _port("b2", WEB, "02:00:00:00:00:12", "10.1.0.12", HOST_B)
B3 = _port("b3", WEB, "02:00:00:00:00:13", "10.1.0.13", HOST_B)
X = _port("x", COPY, "02:00:00:00:00:20", "10.1.0.10", HOST_A)

VIP = "10.1.0.100"
VIP_INT = ip_to_int(VIP)
VIP_MAC = vip_mac(WEB.id, VIP)
OUTPUT_CONTROLLER = Output(OFPP_CONTROLLER)
CHECK = model.HealthCheckSpec(interval=1.0, timeout=0.5, rise=2, fall=2)


def lb(
    *backends: model.BackendSpec, check: model.HealthCheckSpec | None = CHECK
) -> model.LoadBalancerSpec:
    return model.LoadBalancerSpec("lb-1", WEB.id, VIP, "tcp", 80, backends, check)


BACKENDS = (
    model.BackendSpec("10.1.0.11", 8080, 1, port_id=B1.id),
    model.BackendSpec("10.1.0.12", 8080, 1, port_id=B2.id),
    model.BackendSpec("10.1.0.13", 8080, 2),  # by IP only: b3's port holds it
)


def snapshot(*lbs: model.LoadBalancerSpec) -> model.Snapshot:
    return model.Snapshot(
        revision=1,
        hosts=(
            model.HostSpec(HOST_A, "a", "unix:/run/a/db.sock", "192.0.2.1"),
            model.HostSpec(HOST_B, "b", "unix:/run/b/db.sock", "192.0.2.2"),
        ),
        networks=(WEB, COPY),
        ports=(CLIENT, B1, B2, B3, X),
        load_balancers=lbs,
    )


def compute(snap: model.Snapshot, host: str = HOST_A) -> DatapathConfig:
    if host == HOST_A:
        ofports = {"tap-client": CLIENT_PORT, "tap-b1": B1_PORT, "tap-x": X_PORT}
        ofports[tunnel_interface_name(HOST_B)] = TUNNEL_B
    else:
        ofports = {"tap-b2": 3, "tap-b3": 4, tunnel_interface_name(HOST_A): 10}
    return compute_datapath(snap, model.DatapathView(host, ofports))


@pytest.fixture(scope="module")
def config() -> DatapathConfig:
    return compute(snapshot(lb(*BACKENDS)))


def tcp(
    src: model.PortSpec, in_port: int, dst_ip: int, dst_mac: int, dport: int, **extra: int
) -> dict:
    return {
        "in_port": in_port,
        "eth_src": mac_to_int(src.mac),
        "eth_dst": dst_mac,
        "eth_type": ETH_TYPE_IPV4,
        "ip_proto": IP_PROTO_TCP,
        "ipv4_src": ip_to_int(src.ips[0]),
        "ipv4_dst": dst_ip,
        "tcp_src": 40000,
        "tcp_dst": dport,
        **extra,
    }


def to_vip(**extra: int) -> dict:
    return tcp(CLIENT, CLIENT_PORT, VIP_INT, VIP_MAC, 80, **extra)


def test_new_connection_is_spread_by_weight_with_nat_and_backend_mac(
    config: DatapathConfig,
) -> None:
    run = FlowSimulator.of(config).run(to_vip())
    by_dst = {
        e.get("ipv4_dst"): (e.port, e.get("eth_dst"), e.get("tcp_dst"), e.select_weights)
        for e in run.emitted
    }
    assert by_dst == {
        ip_to_int("10.1.0.11"): (B1_PORT, mac_to_int(B1.mac), 8080, (1,)),  # hairpin, local
        ip_to_int("10.1.0.12"): (TUNNEL_B, mac_to_int(B2.mac), 8080, (1,)),
        ip_to_int("10.1.0.13"): (TUNNEL_B, mac_to_int(B3.mac), 8080, (2,)),
    }
    zone = run.ct_calls[0].ct.zone
    assert zone != 0
    commits = [c.ct for c in run.ct_calls if c.ct.commit]
    assert len(commits) == 3 and all(c.zone == zone for c in commits)
    assert {c.nat.dst_ip for c in commits if c.nat} == set(by_dst)


def test_established_connection_never_touches_the_group(config: DatapathConfig) -> None:
    # The first ct applies the connection's NAT: the packet now goes to b2.
    est = fixed_state(CT_TRACKED | CT_ESTABLISHED, ipv4_dst=ip_to_int("10.1.0.12"), tcp_dst=8080)
    run = FlowSimulator.of(config, ct_model=est).run(to_vip())
    assert [(e.port, e.get("eth_dst"), e.select_weights) for e in run.emitted] == [
        (TUNNEL_B, mac_to_int(B2.mac), ())
    ]
    assert not any(isinstance(a, GroupAction) for f in run.trace for a in f.actions)


def test_connections_of_a_removed_backend_keep_their_path() -> None:
    # b2 left the load balancer: established packets NATed to it still get its MAC.
    config = compute(snapshot(lb(BACKENDS[0], BACKENDS[2])))
    est = fixed_state(CT_TRACKED | CT_ESTABLISHED, ipv4_dst=ip_to_int("10.1.0.12"), tcp_dst=8080)
    emitted = FlowSimulator.of(config, ct_model=est).emitted(to_vip())
    assert [(e.port, e.get("eth_dst")) for e in emitted] == [(TUNNEL_B, mac_to_int(B2.mac))]


def test_invalid_packets_to_the_vip_are_dropped(config: DatapathConfig) -> None:
    bad = fixed_state(CT_TRACKED | CT_INVALID)
    assert FlowSimulator.of(config, ct_model=bad).emitted(to_vip()) == []


def test_reply_from_a_remote_backend_is_un_nated_for_the_client(config: DatapathConfig) -> None:
    reply = tcp(B2, TUNNEL_B, ip_to_int("10.1.0.10"), mac_to_int(CLIENT.mac), 40000)
    reply.update(tcp_src=8080, tcp_dst=40000, tunnel_id=WEB.segmentation_id)
    un_nat = fixed_state(CT_TRACKED | CT_ESTABLISHED | CT_REPLY, ipv4_src=VIP_INT, tcp_src=80)
    run = FlowSimulator.of(config, ct_model=un_nat).run(reply)
    assert [
        (e.port, e.get("eth_src"), e.get("ipv4_src"), e.get("tcp_src")) for e in run.emitted
    ] == [(CLIENT_PORT, VIP_MAC, VIP_INT, 80)]
    assert run.ct_calls[0].ct.nat is not None and not run.ct_calls[0].ct.commit


def test_reply_without_conntrack_entry_is_forwarded_as_is() -> None:
    # On the backend's own host the reply has no entry there: it goes on unchanged.
    config = compute(snapshot(lb(*BACKENDS)), HOST_B)
    reply = tcp(B2, 3, ip_to_int("10.1.0.10"), mac_to_int(CLIENT.mac), 40000, tcp_src=8080)
    for state in (CT_TRACKED | CT_INVALID, CT_TRACKED | CT_NEW):
        emitted = FlowSimulator.of(config, ct_model=fixed_state(state)).emitted(reply)
        assert [(e.port, e.get("eth_src"), e.get("ipv4_src")) for e in emitted] == [
            (10, mac_to_int(B2.mac), ip_to_int("10.1.0.12"))
        ]


def test_only_healthy_addressable_backends_are_in_the_group() -> None:
    ghost = model.BackendSpec("10.1.0.77", 8080, 5)  # no port holds it: no MAC to send to
    sick = dataclasses.replace(BACKENDS[1], healthy=False)
    config = compute(snapshot(lb(BACKENDS[0], sick, BACKENDS[2], ghost)))
    (group,) = [g for g in config.groups if g.type == "select"]
    targets = {
        b.actions[0].nat.dst_ip
        for b in group.buckets
        if isinstance(b.actions[0], Ct) and b.actions[0].nat
    }
    assert targets == {ip_to_int("10.1.0.11"), ip_to_int("10.1.0.13")}


def test_no_usable_backend_sends_new_connections_to_the_controller() -> None:
    sick = tuple(dataclasses.replace(b, healthy=False) for b in BACKENDS)
    config = compute(snapshot(lb(*sick)))
    run = FlowSimulator.of(config).run(to_vip())
    assert [e.port for e in run.emitted] == [OFPP_CONTROLLER]
    assert run.trace[-1].table == TABLE_LB_CT  # the packet-in names the reject stage
    assert not [g for g in config.groups if g.type == "select"]


def test_vip_answers_arp_in_its_network_only(config: DatapathConfig) -> None:
    sim = FlowSimulator.of(config)

    def ask(src: model.PortSpec, in_port: int) -> list:
        return sim.emitted(
            {
                "in_port": in_port,
                "eth_src": mac_to_int(src.mac),
                "eth_dst": BROADCAST_MAC,
                "eth_type": ETH_TYPE_ARP,
                "arp_op": ARP_REQUEST,
                "arp_sha": mac_to_int(src.mac),
                "arp_spa": ip_to_int(src.ips[0]),
                "arp_tpa": VIP_INT,
            }
        )

    (answer,) = ask(CLIENT, CLIENT_PORT)
    assert answer.port == CLIENT_PORT
    assert (answer.get("arp_op"), answer.get("arp_sha"), answer.get("arp_spa")) == (
        ARP_REPLY,
        VIP_MAC,
        VIP_INT,
    )
    assert all(e.get("arp_op") != ARP_REPLY for e in ask(X, X_PORT))


def test_other_tenant_never_reaches_the_load_balancer(config: DatapathConfig) -> None:
    run = FlowSimulator.of(config).run(tcp(X, X_PORT, VIP_INT, VIP_MAC, 80))
    assert run.ct_calls == []
    assert all(e.get("ipv4_dst") == VIP_INT for e in run.emitted)  # flooded in copy, unchanged
    assert {e.port for e in run.emitted} <= {TUNNEL_B}


def test_probe_answers_of_local_backends_go_to_the_controller(config: DatapathConfig) -> None:
    sim = FlowSimulator.of(config)
    syn_ack = tcp(B1, B1_PORT, VIP_INT, VIP_MAC, PROBE_PORT_BASE + 7, tcp_src=8080)
    assert [e.port for e in sim.emitted(syn_ack)] == [OFPP_CONTROLLER]
    # A client's own connection from b1 (not the probe ports) is normal traffic.
    client_conn = tcp(B1, B1_PORT, VIP_INT, VIP_MAC, 80, tcp_src=8080)
    assert OFPP_CONTROLLER not in [e.port for e in sim.emitted(client_conn)]
    # b2 is not local: host A installs no probe flow for it.
    config_b = compute(snapshot(lb(*BACKENDS)), HOST_B)
    probe_flows = [
        f for f in config.flows if f.actions == (OUTPUT_CONTROLLER,) and f.table == TABLE_LB
    ]
    probe_flows_b = [
        f for f in config_b.flows if f.actions == (OUTPUT_CONTROLLER,) and f.table == TABLE_LB
    ]
    assert {f.match.get("ipv4_src").value for f in probe_flows} == {ip_to_int("10.1.0.11")}
    assert {f.match.get("ipv4_src").value for f in probe_flows_b} == {
        ip_to_int("10.1.0.12"),
        ip_to_int("10.1.0.13"),
    }


def test_udp_probe_flows_catch_icmp_unreachable() -> None:
    udp_lb = dataclasses.replace(lb(*BACKENDS), protocol="udp")
    config = compute(snapshot(udp_lb))
    icmp = {
        "in_port": B1_PORT,
        "eth_src": mac_to_int(B1.mac),
        "eth_dst": VIP_MAC,
        "eth_type": ETH_TYPE_IPV4,
        "ip_proto": IP_PROTO_ICMP,
        "ipv4_src": ip_to_int("10.1.0.11"),
        "ipv4_dst": VIP_INT,
        "icmpv4_type": 3,
    }
    assert [e.port for e in FlowSimulator.of(config).emitted(icmp)] == [OFPP_CONTROLLER]


def udp(src: model.PortSpec, in_port: int, sport: int) -> dict:
    return tcp(src, in_port, VIP_INT, VIP_MAC, 0) | {
        "ip_proto": IP_PROTO_UDP,
        "tcp_src": 0,
        "tcp_dst": 0,
        "udp_src": sport,
        "udp_dst": 80,
    }


def test_udp_flows_are_spread_by_their_ports_with_the_weights() -> None:
    # OVS's select groups would hash these flows (one client, one VIP, only the source
    # port differs) to a single backend: multipath hashes the UDP ports too.
    udp_lb = dataclasses.replace(lb(*BACKENDS), protocol="udp")
    config = compute(snapshot(udp_lb))
    assert config.groups and all(g.type == "all" for g in config.groups)  # flood only
    sim = FlowSimulator.of(config)
    counts: dict[int, int] = {}
    for sport in range(20000, 20800):
        run = sim.run(udp(CLIENT, CLIENT_PORT, sport))
        (committed,) = [c.ct for c in run.ct_calls if c.ct.commit]
        assert committed.nat is not None and committed.nat.dst_port == 8080
        counts[committed.nat.dst_ip] = counts.get(committed.nat.dst_ip, 0) + 1
        assert {e.port for e in run.emitted} <= {B1_PORT, TUNNEL_B}, run.emitted
    shares = {ip: n / 800 for ip, n in counts.items()}
    expected = {"10.1.0.11": 0.25, "10.1.0.12": 0.25, "10.1.0.13": 0.5}
    for ip, share in expected.items():
        assert abs(shares.get(ip_to_int(ip), 0) - share) < 0.07, shares
    # The same flow always picks the same backend (symmetric hash of its ends).
    first = [c.ct.nat for c in sim.run(udp(CLIENT, CLIENT_PORT, 33333)).ct_calls if c.ct.commit]
    again = [c.ct.nat for c in sim.run(udp(CLIENT, CLIENT_PORT, 33333)).ct_calls if c.ct.commit]
    assert first == again


def test_udp_links_follow_health_and_weights() -> None:
    dead_b2 = (BACKENDS[0], dataclasses.replace(BACKENDS[1], healthy=False), BACKENDS[2])
    udp_lb = dataclasses.replace(lb(*dead_b2), protocol="udp")
    config = compute(snapshot(udp_lb))
    targets = [
        action.nat.dst_ip
        for flow in config.flows
        if flow.table == TABLE_LB_CT and flow.match.get("reg6") is not None
        for action in flow.actions
        if isinstance(action, Ct) and action.nat is not None
    ]
    # Weights 1 and 2 with b2 out: three links, b3 on two of them.
    assert sorted(targets) == [ip_to_int("10.1.0.11"), *[ip_to_int("10.1.0.13")] * 2]


def test_without_health_check_no_probe_flows() -> None:
    config = compute(snapshot(lb(*BACKENDS, check=None)))
    assert not [
        f for f in config.flows if f.actions == (OUTPUT_CONTROLLER,) and f.table == TABLE_LB
    ]


def test_zone_of_a_network_does_not_move_when_others_come() -> None:
    web, copy = network_metadata(WEB), network_metadata(COPY)
    alone = conntrack_zones({web})
    both = conntrack_zones({web, copy})
    assert alone[web] == both[web] and both[web] != both[copy]
    assert 0 not in both.values()


def test_rewrite_table_knows_every_address_of_the_network(config: DatapathConfig) -> None:
    rewrites = {
        f.match.get("ipv4_dst").value: f.actions
        for f in config.flows
        if f.table == TABLE_LB_REWRITE and f.match.fields
    }
    assert set(rewrites) == {ip_to_int(p.ips[0]) for p in (CLIENT, B1, B2, B3)}


def test_without_load_balancers_nothing_changes_but_the_remote_path() -> None:
    config = compute(snapshot())
    assert not [
        f for f in config.flows if f.table in (TABLE_LB_CT, TABLE_LB_REWRITE) and f.match.fields
    ]
    assert not any(isinstance(a, Ct) for f in config.flows for a in f.actions)


def test_vip_mac_is_local_unicast_and_stable() -> None:
    assert vip_mac(WEB.id, VIP) == VIP_MAC
    assert (VIP_MAC >> 40) & 0x03 == 0x02  # locally administered, not multicast
    assert vip_mac(COPY.id, VIP) != VIP_MAC


def test_new_connections_not_to_a_vip_are_committed_so_direct_replies_stay_direct(
    config: DatapathConfig,
) -> None:
    # The client talks to b1 directly: committed with a source NAT to its own address
    # (conntrack moves the port only when the pair is taken by a VIP connection).
    direct = tcp(CLIENT, CLIENT_PORT, ip_to_int("10.1.0.11"), mac_to_int(B1.mac), 8080)
    run = FlowSimulator.of(config).run(direct)
    (commit,) = [call.ct for call in run.ct_calls if call.ct.commit]
    assert commit.nat is not None
    assert commit.nat.src_ip == ip_to_int("10.1.0.10")
    assert commit.nat.src_ports == (32768, 60999)
    assert [e.port for e in run.emitted] == [B1_PORT]
    # From another host: committed as it is, so b1's replies are not new connections.
    remote = direct | {"in_port": TUNNEL_B, "tunnel_id": 5001}
    run = FlowSimulator.of(config).run(remote)
    assert [call.ct.nat for call in run.ct_calls if call.ct.commit] == [None]
    # A reply of a tracked connection commits nothing.
    established = fixed_state(CT_TRACKED | CT_ESTABLISHED | CT_REPLY)
    run = FlowSimulator.of(config, ct_model=established).run(direct)
    assert not [call for call in run.ct_calls if call.ct.commit]
    assert [e.port for e in run.emitted] == [B1_PORT]
