"""UDP flows pinned by conntrack to a backend that stopped being picked: which backends
(controller.core.pipeline.udp_pins), the NXT_CT_FLUSH that forgets them
(controller.core.ofmsg.ct_flush) and when a switch is sent it
(controller.conntrack_flush), against a scripted switch. On real switches:
tests/e2e/test_load_balancer_udp.py."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from controller.conntrack_flush import REPEAT_AFTER, UdpPinFlusher
from controller.core import model, ofmsg
from controller.core.flows import IP_PROTO_UDP, ip_to_int
from controller.core.pipeline.udp_pins import (
    NO_UDP_BACKENDS,
    UdpBackend,
    UdpBackends,
    stale_udp_backends,
)
from controller.openflow.channel import OpenFlowError, SwitchChannel
from tests.unit.test_lb import BACKENDS, COPY, VIP, compute, lb, snapshot

pytestmark = pytest.mark.unit


def udp(*backends: model.BackendSpec) -> model.LoadBalancerSpec:
    return dataclasses.replace(lb(*backends), protocol="udp")


def pins(zone: int, *ips: str) -> frozenset[UdpBackend]:
    return frozenset(UdpBackend(zone, ip_to_int(VIP), 80, ip_to_int(ip), 8080) for ip in ips)


# ---- which backends ------------------------------------------------------------------


def test_a_udp_listeners_backends_are_picked_unless_unhealthy_or_unreachable() -> None:
    dead_b2 = dataclasses.replace(BACKENDS[1], healthy=False)
    unreachable = dataclasses.replace(BACKENDS[2], ip="10.1.0.99", port_id=None)
    config = compute(snapshot(udp(BACKENDS[0], dead_b2, unreachable)))
    zone = next(iter(config.udp_backends.picked)).zone
    assert config.udp_backends == UdpBackends(
        picked=pins(zone, "10.1.0.11"), unpicked=pins(zone, "10.1.0.12", "10.1.0.99")
    )


def test_tcp_listeners_pin_nothing_to_flush() -> None:
    # Draining a TCP backend must not cut its connections; dead ones fail on their own.
    assert compute(snapshot(lb(*BACKENDS))).udp_backends == NO_UDP_BACKENDS


def test_a_backend_named_twice_is_picked_if_either_is() -> None:
    by_ip = dataclasses.replace(BACKENDS[0], port_id=None, healthy=False)
    config = compute(snapshot(udp(BACKENDS[0], by_ip)))
    assert not config.udp_backends.unpicked and len(config.udp_backends.picked) == 1


def test_stale_backends_are_those_picked_before_and_not_now() -> None:
    now = UdpBackends(picked=pins(7, "10.1.0.11"), unpicked=pins(7, "10.1.0.12"))
    assert stale_udp_backends(pins(7, "10.1.0.11", "10.1.0.12", "10.1.0.13"), now) == pins(
        7,
        "10.1.0.12",
        "10.1.0.13",  # .13: removed from the load balancer
    )
    assert stale_udp_backends(pins(7, "10.1.0.11"), now) == frozenset()
    # Nothing known of the switch (it just connected): whatever is not picked may be pinned.
    assert stale_udp_backends(None, now) == pins(7, "10.1.0.12")


def test_another_networks_load_balancer_does_not_move_the_zone_of_its_pins() -> None:
    alone = compute(snapshot(udp(*BACKENDS))).udp_backends
    other = dataclasses.replace(lb(*BACKENDS), id="lb-2", network_id=COPY.id, protocol="udp")
    both = compute(snapshot(udp(*BACKENDS), other)).udp_backends
    assert alone.picked <= both.picked


# ---- the message -----------------------------------------------------------------------

# What `ovs-ofctl -O OpenFlow13 ct-flush SWITCH zone=5 'ct_nw_proto=17,ct_nw_dst=10.5.0.100,
# ct_tp_dst=53' 'ct_nw_src=10.5.0.12,ct_tp_src=8080'` (Open vSwitch 3.1.0) sent, xid 2.
OVS_OFCTL_CT_FLUSH = bytes.fromhex(
    "04040070000000020000232000000020110000000000000000000028000000000001001400000000"
    "000000000000ffff0a05006400000000000300080035000000010028000000000000001400000000"
    "000000000000ffff0a05000c00000000000200081f9000000002000800050000"
)


def test_ct_flush_is_byte_for_byte_what_ovs_ofctl_sends() -> None:
    message = ofmsg.ct_flush(
        2,
        zone=5,
        ip_proto=IP_PROTO_UDP,
        orig=ofmsg.CtTuple(dst=ip_to_int("10.5.0.100"), dst_port=53),
        reply=ofmsg.CtTuple(src=ip_to_int("10.5.0.12"), src_port=8080),
    )
    assert message == OVS_OFCTL_CT_FLUSH


def test_a_ct_flush_of_a_whole_zone_has_no_tuples() -> None:
    message = ofmsg.ct_flush(9, zone=0x1234, ip_proto=IP_PROTO_UDP)
    assert len(message) == 32 and message[-8:] == bytes.fromhex("0002000812340000")


# ---- when a switch is sent it ----------------------------------------------------------


class ScriptedSwitch:
    """Records the conntrack flushes it is sent (zone, backend address); answers barriers
    at once; refuses every flush with `refuse` (an OpenFlow error type) if set."""

    def __init__(self) -> None:
        self.channel = SwitchChannel(1, self._receive)
        self.flushed: list[list[tuple[int, int]]] = []  # one list per barrier
        self.refuse: int | None = None
        self._batch: list[tuple[int, int]] = []

    def _receive(self, data: bytes) -> bool:
        offset = 0
        while offset < len(data):
            _v, msg_type, length, xid = ofmsg.parse_header(data[offset : offset + 8])
            message = data[offset : offset + length]
            offset += length
            if msg_type == ofmsg.OFPT_BARRIER_REQUEST:
                self.flushed.append(self._batch)
                self._batch = []
                self.channel.on_reply(xid, b"")
                continue
            assert msg_type == ofmsg.OFPT_EXPERIMENTER
            assert struct.unpack_from("!II", message, 8) == (
                ofmsg.NX_EXPERIMENTER_ID,
                ofmsg.NXT_CT_FLUSH,
            )
            if self.refuse is not None:
                self.channel.on_error(OpenFlowError(xid, self.refuse, 0))
                continue
            self._batch.append(zone_and_reply_source(message))
        return True


def properties(data: bytes, start: int) -> dict[int, bytes]:
    """OpenFlow properties from `start`: type -> value (padding cut by length)."""
    found, offset = {}, start
    while offset < len(data):
        prop_type, length = struct.unpack_from("!HH", data, offset)
        found[prop_type] = data[offset + 4 : offset + length]
        offset += length + (-length % 8)
    return found


def zone_and_reply_source(message: bytes) -> tuple[int, int]:
    top = properties(message, 24)  # after the header, subtype, ip_proto and padding
    reply = properties(top[1], 4)  # a nested property: 4 bytes of padding first
    assert reply[0][:12] == bytes(10) + b"\xff\xff"  # an IPv4-mapped address
    return int.from_bytes(top[2][:2], "big"), int.from_bytes(reply[0][12:], "big")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("controller.conntrack_flush.time.monotonic", lambda: now[0])
    return now


# One UDP listener in zone 7 with backends .11 and .12: both picked; .12 down.
ALL_UP = UdpBackends(picked=pins(7, "10.1.0.11", "10.1.0.12"))
B2_DOWN = UdpBackends(picked=pins(7, "10.1.0.11"), unpicked=pins(7, "10.1.0.12"))


def flushed_ips(batch: list[tuple[int, int]]) -> list[str]:
    return [f"10.1.0.{ip & 0xFF}" for _zone, ip in batch]


def test_first_look_flushes_the_unpicked_then_only_what_stops_being_picked(
    clock: list[float],
) -> None:
    switch = ScriptedSwitch()
    flusher = UdpPinFlusher(switch.channel, timeout=1)
    assert flusher.flows_applied(ALL_UP) is None and switch.flushed == []
    assert flusher.flows_applied(ALL_UP) is None and switch.flushed == []

    assert flusher.flows_applied(B2_DOWN) == REPEAT_AFTER
    assert [flushed_ips(b) for b in switch.flushed] == [["10.1.0.12"]]
    assert switch.flushed[0][0][0] == 7
    # Once more after the switch's datapath cache had time to forget the old flows.
    clock[0] += REPEAT_AFTER / 2
    assert flusher.flows_applied(B2_DOWN) == pytest.approx(REPEAT_AFTER / 2)
    assert len(switch.flushed) == 1
    clock[0] += REPEAT_AFTER / 2
    assert flusher.flows_applied(B2_DOWN) is None
    assert [flushed_ips(b) for b in switch.flushed] == [["10.1.0.12"], ["10.1.0.12"]]
    assert flusher.flows_applied(B2_DOWN) is None and len(switch.flushed) == 2

    # A new flusher (the switch reconnected): the unpicked are flushed first thing.
    again = UdpPinFlusher(switch.channel, timeout=1)
    assert again.flows_applied(B2_DOWN) == REPEAT_AFTER
    assert flushed_ips(switch.flushed[-1]) == ["10.1.0.12"]


def test_a_backend_picked_again_before_the_repeat_keeps_its_new_flows(
    clock: list[float],
) -> None:
    switch = ScriptedSwitch()
    flusher = UdpPinFlusher(switch.channel, timeout=1)
    flusher.flows_applied(ALL_UP)
    flusher.flows_applied(B2_DOWN)
    assert len(switch.flushed) == 1
    clock[0] += REPEAT_AFTER
    assert flusher.flows_applied(ALL_UP) is None
    assert len(switch.flushed) == 1


def test_a_switch_without_ct_flush_is_asked_once(clock: list[float]) -> None:
    switch = ScriptedSwitch()
    switch.refuse = ofmsg.OFPET_BAD_REQUEST
    flusher = UdpPinFlusher(switch.channel, timeout=1)
    down = UdpBackends(picked=pins(7, "10.1.0.11"), unpicked=pins(7, "10.1.0.12", "10.1.0.13"))
    flusher.flows_applied(down)
    assert len(switch.flushed) == 1  # one barrier: the two flushes were sent, both refused
    flusher.flows_applied(UdpBackends(unpicked=down.picked | down.unpicked))
    clock[0] += REPEAT_AFTER
    flusher.flows_applied(UdpBackends(unpicked=down.picked | down.unpicked))
    assert len(switch.flushed) == 1
