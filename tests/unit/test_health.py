"""The health state machine and monitor, with time passed in and frames built by hand."""

from __future__ import annotations

import dataclasses
import random

import pytest

from controller.core import probes
from controller.core.flows import ip_to_int, mac_to_int
from controller.core.health import (
    FIRST_PROBE_DELAY,
    HealthChange,
    HealthMonitor,
    HealthState,
    Probe,
    probe_targets,
    step,
    with_health,
)
from controller.core.model import (
    BackendSpec,
    DatapathView,
    HealthCheckSpec,
    LoadBalancerSpec,
    NetworkSpec,
    PortSpec,
    Snapshot,
)
from controller.core.pipeline.context import build_context
from controller.core.pipeline.load_balancer import (
    PROBE_PORT_BASE,
    PROBE_PORT_COUNT,
    local_load_balancers,
    vip_mac,
)
from controller.core.probes import TCP_ACK, TCP_RST, TCP_SYN, Endpoints

pytestmark = pytest.mark.unit

NET = NetworkSpec("net-1", "t-1", "web", "vxlan", 7, "10.1.0.0/24")
B1 = PortSpec("port-b1", NET.id, "02:00:00:00:00:11", ("10.1.0.11",), "host-a", "tap-b1")
B2 = PortSpec("port-b2", NET.id, "02:00:00:00:00:12", ("10.1.0.12",), "host-b", "tap-b2")
UNBOUND = PortSpec("port-u", NET.id, "02:00:00:00:00:13", ("10.1.0.13",))
CHECK = HealthCheckSpec(interval=1.0, timeout=0.5, rise=2, fall=3)
VIP = "10.1.0.100"


def lb(protocol: str = "tcp", check: HealthCheckSpec | None = CHECK) -> LoadBalancerSpec:
    return LoadBalancerSpec(
        "lb-1",
        NET.id,
        VIP,
        protocol,  # type: ignore[arg-type]
        80,
        (
            BackendSpec("10.1.0.11", 8080, 1, port_id=B1.id),
            BackendSpec("10.1.0.12", 8080, 1, healthy=False),
            BackendSpec("10.1.0.13", 8080, 1),  # its port is not bound: not probed
        ),
        check,
    )


def snapshot(*lbs: LoadBalancerSpec) -> Snapshot:
    return Snapshot(revision=1, networks=(NET,), ports=(B1, B2, UNBOUND), load_balancers=lbs)


def monitor_for(snap: Snapshot, now: float = 0.0) -> HealthMonitor:
    monitor = HealthMonitor(rng=random.Random(7))
    stored = {(x.id, b.ip, b.port): b.healthy for x in snap.load_balancers for b in x.backends}
    monitor.sync(probe_targets(snap), stored, now)
    return monitor


def answer(probe: Probe, flags: int, *, ack_offset: int = 1) -> bytes:
    sent = probes.parse_frame(probe.frame)
    back = Endpoints(
        sent.ends.dst_mac,
        sent.ends.src_mac,
        sent.ends.dst_ip,
        sent.ends.src_ip,
        sent.ends.dst_port,
        sent.ends.src_port,
    )
    return probes.tcp_frame(back, flags=flags, seq=99, ack=sent.seq + ack_offset)


# ---- state machine -------------------------------------------------------------------


def test_fall_consecutive_failures_take_a_backend_out() -> None:
    state = HealthState(True)
    for _ in range(2):
        state = step(state, False, rise=2, fall=3)
        assert state.healthy
    assert not step(state, False, rise=2, fall=3).healthy


def test_a_success_resets_the_failure_count() -> None:
    state = step(step(HealthState(True), False, rise=2, fall=2), True, rise=2, fall=2)
    assert step(state, False, rise=2, fall=2).healthy


def test_rise_consecutive_successes_bring_it_back() -> None:
    state = step(HealthState(False), True, rise=2, fall=2)
    assert not state.healthy
    assert not step(state, False, rise=2, fall=2).healthy
    assert step(state, True, rise=2, fall=2).healthy


# ---- targets and overlay ---------------------------------------------------------------


def test_targets_are_bound_backends_with_a_health_check() -> None:
    targets = probe_targets(snapshot(lb()))
    assert [(t.key, t.host_id, t.interface) for t in targets] == [
        (("lb-1", "10.1.0.11", 8080), "host-a", "tap-b1"),
        (("lb-1", "10.1.0.12", 8080), "host-b", "tap-b2"),  # found by its IP
    ]
    assert targets[0].vip_mac == vip_mac(NET.id, VIP)
    assert probe_targets(snapshot(lb(check=None))) == ()


def test_probes_go_to_the_port_the_flows_send_the_backend_to() -> None:
    # 10.1.0.12 is claimed three times: first in the snapshot by an unbound port,
    # then by B2, then by a port on host-c whose MAC sorts first. Looking the
    # owner up by string in snapshot order found the unbound port and probed
    # nothing, while the flows send the backend's connections to host-c.
    unbound = PortSpec("port-z", NET.id, "02:00:00:00:00:99", ("10.1.0.12",))
    first_by_mac = PortSpec(
        "port-c", NET.id, "02:00:00:00:00:01", ("10.1.0.12",), "host-c", "tap-c"
    )
    snap = dataclasses.replace(
        snapshot(lb()), ports=(unbound, B1, B2, first_by_mac), load_balancers=(lb(),)
    )
    (served,) = local_load_balancers(
        snap, build_context(snap, DatapathView("host-c", {"tap-c": 3}))
    )
    (flows_owner,) = [b.owner for b in served.backends if b.ip == ip_to_int("10.1.0.12")]
    assert flows_owner is not None
    (probed,) = [t for t in probe_targets(snap) if t.key == ("lb-1", "10.1.0.12", 8080)]
    assert (probed.host_id, probed.backend_mac) == (flows_owner.host_id, flows_owner.mac)
    assert (probed.host_id, probed.interface) == ("host-c", "tap-c")


def test_overlay_replaces_stored_health_and_trusts_unchecked_backends() -> None:
    snap = snapshot(lb(), dataclasses.replace(lb(check=None), id="lb-2"))
    seen = with_health(snap, {("lb-1", "10.1.0.11", 8080): False})
    first, second = seen.load_balancers
    assert [b.healthy for b in first.backends] == [False, False, True]
    assert [b.healthy for b in second.backends] == [True, True, True]
    assert with_health(snapshot(), {}) == snapshot()


# ---- the monitor ---------------------------------------------------------------------------


def test_first_probe_waits_for_the_flows_then_one_per_interval() -> None:
    monitor = monitor_for(snapshot(lb()))
    assert monitor.due(0.0) == []
    start = max(FIRST_PROBE_DELAY, CHECK.interval)
    sent = monitor.due(start)
    assert [(p.host_id, p.interface) for p in sent] == [("host-a", "tap-b1"), ("host-b", "tap-b2")]
    syn = probes.parse_frame(sent[0].frame)
    assert syn.tcp_flags == TCP_SYN
    assert syn.ends.src_ip == ip_to_int(VIP) and syn.ends.dst_ip == ip_to_int("10.1.0.11")
    assert syn.ends.dst_mac == mac_to_int(B1.mac) and syn.ends.dst_port == 8080
    assert PROBE_PORT_BASE <= syn.ends.src_port < PROBE_PORT_BASE + PROBE_PORT_COUNT
    assert monitor.due(start + 0.9) == []
    assert len(monitor.due(start + 1.0)) == 2


def test_syn_ack_is_a_success_and_the_half_open_connection_is_reset() -> None:
    monitor = monitor_for(snapshot(lb()))
    probe = monitor.due(5.0)[1]  # b2, stored unhealthy; rise 2
    outcome = monitor.on_reply(answer(probe, TCP_SYN | TCP_ACK), 5.1)
    assert outcome.changes == ()
    (close,) = outcome.follow_up
    rst = probes.parse_frame(close.frame)
    assert rst.tcp_flags == TCP_RST and rst.seq == probes.parse_frame(probe.frame).seq + 1
    assert close.interface == "tap-b2"
    probe = monitor.due(6.0)[1]
    outcome = monitor.on_reply(answer(probe, TCP_SYN | TCP_ACK), 6.1)
    assert outcome.changes == (HealthChange(("lb-1", "10.1.0.12", 8080), True),)


def delivered(monitor: HealthMonitor, sent: list[Probe]) -> list[Probe]:
    """The switches confirm (barrier replies) that they sent `sent`."""
    for probe in sent:
        monitor.delivered(probe, ip_to_int(VIP))
    return sent


def test_rst_and_silence_are_failures() -> None:
    monitor = monitor_for(snapshot(lb()))
    key = ("lb-1", "10.1.0.11", 8080)
    probe = delivered(monitor, monitor.due(5.0))[0]
    assert monitor.on_reply(answer(probe, TCP_RST | TCP_ACK), 5.1).changes == ()
    delivered(monitor, monitor.due(6.0))
    assert monitor.expire(6.4) == []  # within the timeout
    assert [c for c in monitor.expire(6.6) if c.key == key] == []  # 2nd failure of 3
    delivered(monitor, monitor.due(7.0))
    assert HealthChange(key, False) in monitor.expire(7.6)
    assert monitor.health()[key] is False


def test_silence_of_a_switch_that_never_confirmed_the_probe_is_no_verdict() -> None:
    monitor = monitor_for(snapshot(lb()))
    key = ("lb-1", "10.1.0.11", 8080)
    silent = "the switch of host host-a is not answering"
    monitor.due(5.0)
    changes = [c for c in monitor.expire(5.6) if c.key == key]
    assert changes == [HealthChange(key, True, silent)]  # said once...
    for second in range(6, 10):  # ...however long it lasts (fall is 3)
        monitor.due(float(second))
        assert [c for c in monitor.expire(second + 0.6) if c.key == key] == []
    assert monitor.health()[key] is True
    assert monitor.unknown()[key] == silent
    # The switch answers again: the verdict, known again, is reported.
    probe = monitor.due(10.0)[0]
    outcome = monitor.on_reply(answer(probe, TCP_SYN | TCP_ACK), 10.1)
    assert outcome.changes == (HealthChange(key, True),)
    assert key not in monitor.unknown()


def test_a_probe_not_sent_is_no_verdict_and_sync_corrects_a_stale_record() -> None:
    monitor = monitor_for(snapshot(lb()))
    key = ("lb-1", "10.1.0.11", 8080)
    probe = monitor.due(5.0)[0]
    assert monitor.not_sent(probe, ip_to_int(VIP)) == [
        HealthChange(key, True, "the switch of host host-a is not connected")
    ]
    assert monitor.expire(10.0) == [
        HealthChange(
            ("lb-1", "10.1.0.12", 8080), False, "the switch of host host-b is not answering"
        )
    ]
    # SQL says b1 is known and b2 is not: only b1's record is out of date.
    stored_unknown = {
        key: None,
        ("lb-1", "10.1.0.12", 8080): monitor.unknown()[("lb-1", "10.1.0.12", 8080)],
    }
    stored = {key: True, ("lb-1", "10.1.0.12", 8080): False}
    changes = monitor.sync(probe_targets(snapshot(lb())), stored, 10.0, stored_unknown)
    assert changes == [HealthChange(key, True, "the switch of host host-a is not connected")]


def test_sync_reports_a_verdict_that_never_reached_the_store() -> None:
    monitor = monitor_for(snapshot(lb()))
    key = ("lb-1", "10.1.0.11", 8080)
    b2 = ("lb-1", "10.1.0.12", 8080)
    for second in (5.0, 6.0, 7.0):  # fall 3: b1 is taken out
        delivered(monitor, monitor.due(second))
        monitor.expire(second + 0.6)
    assert monitor.health()[key] is False
    # Recording it failed (database down): the store still says healthy.
    targets = probe_targets(snapshot(lb()))
    stale = {key: True, b2: False}
    assert monitor.sync(targets, stale, 8.0, {key: None, b2: None}) == [HealthChange(key, False)]
    assert monitor.sync(targets, {key: False, b2: False}, 8.0, {key: None, b2: None}) == []


def test_an_answer_that_does_not_acknowledge_the_probe_is_ignored() -> None:
    monitor = monitor_for(snapshot(lb()))
    probe = monitor.due(5.0)[1]
    stale = monitor.on_reply(answer(probe, TCP_SYN | TCP_ACK, ack_offset=5), 5.1)
    assert stale.changes == () and stale.follow_up == ()
    assert monitor.on_reply(b"junk", 5.1).follow_up == ()


def test_udp_silence_is_success_and_port_unreachable_is_failure() -> None:
    udp = dataclasses.replace(lb("udp"), health_check=dataclasses.replace(CHECK, rise=1, fall=1))
    monitor = monitor_for(snapshot(udp))
    key1, key2 = ("lb-1", "10.1.0.11", 8080), ("lb-1", "10.1.0.12", 8080)
    p1, _p2 = delivered(monitor, monitor.due(5.0))
    # b1 answers ICMP port unreachable quoting the probe.
    sent = probes.parse_frame(p1.frame)
    icmp = probes.icmp_port_unreachable(
        src_mac=sent.ends.dst_mac,
        dst_mac=sent.ends.src_mac,
        src_ip=sent.ends.dst_ip,
        dst_ip=sent.ends.src_ip,
        offending=sent.ip_packet,
    )
    assert monitor.on_reply(icmp, 5.1).changes == (HealthChange(key1, False),)
    # b2 (stored unhealthy) stays silent: up again.
    assert monitor.expire(5.6) == [HealthChange(key2, True)]


def test_sync_keeps_state_and_forgets_removed_backends() -> None:
    snap = snapshot(lb())
    monitor = monitor_for(snap)
    assert monitor.health() == {
        ("lb-1", "10.1.0.11", 8080): True,
        ("lb-1", "10.1.0.12", 8080): False,
    }
    probe = monitor.due(5.0)[0]
    monitor.sync(probe_targets(snapshot()), {}, 5.05)
    assert monitor.health() == {}
    # An answer to a probe of a forgotten backend changes nothing.
    assert monitor.on_reply(answer(probe, TCP_RST | TCP_ACK), 5.1).changes == ()
    assert monitor.next_wakeup() is None
