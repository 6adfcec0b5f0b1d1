"""UDP load balancing on real switches, and replies to a client that also talks to a
backend directly from the source port it used through the VIP.

One lab for the module (tests.support.load_balancer.build with protocol udp): client c
and backend b1 on h1, b2 and b3 on h2, VXLAN, weights 1:1:2, health checks every 0.5 s.
Backends are UDP servers answering each datagram with their name.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from lab.hosts import require_lab_tools
from tests.support.eventually import eventually
from tests.support.fabric import lab_and_service
from tests.support.load_balancer import (
    ADDRESSES,
    BACKEND_PORT,
    LISTENER,
    VIP,
    LbLab,
    Servers,
    build,
    exchange,
)

pytestmark = pytest.mark.e2e

VIA_VIP = f"{VIP}:{LISTENER}"


@pytest.fixture(scope="module")
def udp_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LbLab, Servers]]:
    require_lab_tools()
    workdir = tmp_path_factory.mktemp("udp-lb")
    with lab_and_service(workdir / "service") as fabric, Servers() as servers:
        yield build(fabric, servers, protocol="udp"), servers


FLOWS = 400


def test_udp_flows_are_split_by_weight_and_answered_from_the_vip(
    udp_lab: tuple[LbLab, Servers],
) -> None:
    lb, _servers = udp_lab
    eventually(
        lambda: lb.health() == {"b1": True, "b2": True, "b3": True},
        timeout=10,
        what="every backend healthy",
    )
    # 400 flows: multipath spreads them at random, and with 200 a share left the
    # +-10% band about once in 150 runs by chance alone (b3's 50% is +-2.8 sigma
    # there; +-4 sigma with 400). Seen once in 50 runs: b3 75 of 200.
    outcome = exchange(lb.vms["c"], FLOWS)
    counts = outcome.counts()
    health = lb.health()  # the weights hold only while every backend stays healthy
    print(f"split over {FLOWS} UDP flows:", counts, "health after:", health)
    assert counts.get("", 0) == 0, counts
    assert set(outcome.sources) == {VIA_VIP}, set(outcome.sources)
    expected = {"b1": 0.25, "b2": 0.25, "b3": 0.5}
    for name, share in expected.items():
        assert abs(counts.get(name, 0) / FLOWS - share) <= 0.10, (counts, health)


def test_same_source_port_through_the_vip_then_directly_gets_the_backends_own_reply(
    udp_lab: tuple[LbLab, Servers],
) -> None:
    lb, _servers = udp_lab
    client = lb.vms["c"]
    for source_port in (40001, 40002, 40003):
        via_vip = exchange(client, 1, source_port=source_port)
        (backend,) = via_vip.served
        assert backend and via_vip.sources == [VIA_VIP], via_vip
        direct_to = f"{ADDRESSES[backend]}:{BACKEND_PORT}"
        # The same source port, now to the backend's own address: the answer must come
        # from that address, not be turned back into the VIP's by the VIP's conntrack
        # entry (which has the very same reply tuple); then the VIP again.
        both = exchange(client, 2, targets=(direct_to, VIA_VIP), source_port=source_port)
        assert both.served[0] == backend and both.sources[0] == direct_to, both
        assert both.served[1] and both.sources[1] == VIA_VIP, both


# Connects from `port` to each "ip:port" target in turn (closing each connection
# first), sends a line and prints what answered (or the error). Each connection ends
# with a reset, not a FIN: a FIN would leave it in TIME_WAIT here, and the kernel then
# refuses the same address pair again now and then (EADDRNOTAVAIL; 1 run in 20).
_TCP_FROM_PORT = r"""
import socket, struct, sys
port, answers = int(sys.argv[1]), []
for target in sys.argv[2:]:
    ip, dport = target.rsplit(":", 1)
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.bind(("0.0.0.0", port))
            s.settimeout(5)
            s.connect((ip, int(dport)))
            s.sendall(b"hello\n")
            answers.append(s.makefile().readline().strip())
    except OSError as exc:
        answers.append(f"{type(exc).__name__}: {exc}")
print(" ".join(answers))
"""


def test_tcp_through_the_vip_then_directly_from_the_same_port(
    udp_lab: tuple[LbLab, Servers],
) -> None:
    lb, servers = udp_lab
    # A TCP listener next to the UDP one: VIP:81 -> b1's TCP server on 8080.
    servers.start(lb.vms["b1"], protocol="tcp", key="b1-tcp")
    lb.fabric.client.create(
        "load-balancers",
        network_id=lb.network,
        name="tcp",
        vip=VIP,
        protocol="tcp",
        port=81,
        backends=[{"port_id": lb.fabric.port_ids["b1"], "port": BACKEND_PORT}],
    )
    direct = f"{ADDRESSES['b1']}:{BACKEND_PORT}"
    client = lb.vms["c"]
    eventually(
        lambda: (
            client.run(sys.executable, "-c", _TCP_FROM_PORT, "0", f"{VIP}:81").stdout.strip()
            == "b1"
        ),
        timeout=15,
        what="the TCP listener to answer",
    )
    answers = client.run(
        sys.executable,
        "-c",
        _TCP_FROM_PORT,
        "40100",
        f"{VIP}:81",
        direct,
        f"{VIP}:81",
        direct,
        timeout=60,
    ).stdout.split()
    assert answers == ["b1"] * 4, answers


def test_dead_udp_backend_is_taken_out_by_the_health_check_and_comes_back(
    udp_lab: tuple[LbLab, Servers],
) -> None:
    lb, servers = udp_lab
    eventually(
        lambda: lb.health() == {"b1": True, "b2": True, "b3": True},
        timeout=10,
        what="every backend healthy",
    )
    servers.kill("b2")
    # Its closed port answers the probes with ICMP port unreachable: out after fall=2.
    eventually(lambda: not lb.health()["b2"], timeout=10, what="b2 reported unhealthy")
    # UDP backends are picked by multipath, one lb_ct flow per link (no select group).
    picks = "\n".join(f for f in lb.fabric.hosts["h1"].dump_flows() if "ct(commit" in f)
    assert f"nat(dst={ADDRESSES['b2']}:" not in picks, picks
    assert f"nat(dst={ADDRESSES['b3']}:" in picks, picks
    outcome = exchange(lb.vms["c"], 60)
    counts = outcome.counts()
    assert "b2" not in counts and counts.get("", 0) == 0, counts

    servers.start(lb.vms["b2"], protocol="udp")
    eventually(lambda: lb.health()["b2"], timeout=10, what="b2 healthy again")
    assert exchange(lb.vms["c"], 60).counts().get("b2", 0) > 0


def test_a_client_that_keeps_its_source_port_leaves_a_dead_backend(
    udp_lab: tuple[LbLab, Servers],
) -> None:
    """A UDP client that always sends from one port (NTP, a DNS forwarder, syslog) has
    one conntrack entry per VIP, and every datagram it sends keeps that entry alive:
    unless the controller flushes the entries of a backend that stops being picked, the
    client stays pinned to the dead backend for as long as it keeps sending."""
    lb, servers = udp_lab
    client = lb.vms["c"]
    eventually(
        lambda: lb.health() == {"b1": True, "b2": True, "b3": True},
        timeout=10,
        what="every backend healthy",
    )
    # A source port whose flow the VIP sends to b2 (multipath hashes the ports: 1 in 4).
    pinned = next(
        port
        for port in range(40200, 40400)
        if exchange(client, 1, source_port=port).served == ["b2"]
    )
    servers.kill("b2")
    try:
        eventually(lambda: not lb.health()["b2"], timeout=10, what="b2 reported unhealthy")
        # Each exchange retries for 2 s and so keeps a stale entry alive: only a flush
        # can let this pass (UDP entries expire after 30 s without traffic).
        eventually(
            lambda: exchange(client, 1, source_port=pinned).served[0] in ("b1", "b3"),
            timeout=10,
            what=f"the flow from port {pinned} answered by a live backend",
        )
    finally:
        servers.start(lb.vms["b2"], protocol="udp")
        eventually(lambda: lb.health()["b2"], timeout=10, what="b2 healthy again")
