"""Which UDP flows conntrack keeps pinned to backends that no longer take new flows.

A UDP listener's flow is NATed to its backend once, when conntrack first sees it
(load_balancer.py: only `+new` packets are picked); every later datagram of the same
5-tuple follows the entry and refreshes it. A client that sends from one source port
(NTP, a DNS forwarder, syslog, a game or media stream) therefore stays on its backend
for as long as it keeps sending, even after that backend died or was removed: the
flows stop picking it, but the entry never goes idle. TCP recovers by itself (the
dead backend's connections fail and the client opens new ones from new ports); UDP
does not. So when a backend stops being picked, the entries of the listener's flows
NATed to it are flushed and the next datagram is picked again, among the backends
that are left (kube-proxy clears UDP entries of removed endpoints for the same
reason; OVN's load balancers do it with the `ct_flush` option). TCP entries are left
alone: draining a backend must not cut its established connections.

Pure: the host agent sends the flushes (controller.conntrack_flush).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from controller.core.flows import IP_PROTO_UDP
from controller.core.pipeline.load_balancer import LocalLoadBalancer


class UdpBackend(NamedTuple):
    """A backend of a UDP listener, where conntrack entries may point: the listener's
    zone, VIP and port (the entries' original destination), the backend's address
    and port (their reply source)."""

    zone: int
    vip: int
    vip_port: int
    ip: int
    port: int


@dataclass(frozen=True, slots=True)
class UdpBackends:
    """The backends of a datapath's UDP listeners: those new flows go to (`picked`) and
    those they do not (`unpicked`: unhealthy or unreachable)."""

    picked: frozenset[UdpBackend] = frozenset()
    unpicked: frozenset[UdpBackend] = frozenset()


NO_UDP_BACKENDS = UdpBackends()


def udp_backends(lbs: Iterable[LocalLoadBalancer]) -> UdpBackends:
    picked: set[UdpBackend] = set()
    unpicked: set[UdpBackend] = set()
    for lb in lbs:
        if lb.ip_proto != IP_PROTO_UDP:
            continue
        usable = lb.usable
        for backend in lb.backends:
            where = picked if backend in usable else unpicked
            where.add(UdpBackend(lb.zone, lb.vip, lb.spec.port, backend.ip, backend.port))
    if not picked and not unpicked:
        return NO_UDP_BACKENDS
    # A backend listed twice (by port and by address) is picked if either is.
    return UdpBackends(frozenset(picked), frozenset(unpicked - picked))


def stale_udp_backends(
    previous: frozenset[UdpBackend] | None, now: UdpBackends
) -> frozenset[UdpBackend]:
    """The backends whose flows conntrack must forget: picked before (`previous`, what
    the switch was last given) and not now. `previous` None: the switch's entries are
    not known (it just connected, or this agent just started): every backend not
    picked now may still hold some. A backend removed from a load balancer while no
    agent was connected to the switch is not found; its entries idle out (30 s after
    their client stops)."""
    if previous is None:
        return now.unpicked
    return previous - now.picked
