"""Load-balancer health checks sent from the VIP itself, by the switch of each backend.

No controller address is needed in a tenant network: a probe is a packet-out
on the switch where the backend's port is bound, a TCP SYN (or a UDP datagram)
from VIP:probe-port to the backend, written straight to the backend's ofport.
The backend answers the VIP; the flows of `controller.core.pipeline.load_balancer` send such answers
(destination port in the probe range) to the controller. Verdicts:

    TCP  SYN-ACK = up (the controller then resets the half-open connection);
         RST or no answer within the timeout = down
    UDP  ICMP port unreachable = down; silence (or an answer) = up, as in OVN

A backend is taken out after `fall` consecutive failures and put back after
`rise` consecutive successes; one probe per `interval`.

Silence counts only from a switch known to have sent the probe (its barrier
reply came back, `HealthMonitor.delivered`). A switch that is not answering
gives no verdict: the backend's health is unknown, it keeps its last verdict
and stays in its groups, since the switch cannot tell us anything about it.

The pure parts: `step` (the rise/fall state machine), `probe_targets` (who is
probed, from the snapshot), `HealthMonitor` (schedule, pending probes and
verdicts, with time passed in) and `with_health` (the snapshot the pipeline
sees). The thin I/O shell around them (a timer thread and packet-out) is
`controller.health_service`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from controller.core import probes
from controller.core.flows import IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, ip_to_int
from controller.core.model import HealthCheckSpec, LoadBalancerSpec, Snapshot
from controller.core.pipeline.context import bound_ports
from controller.core.pipeline.load_balancer import (
    PROBE_PORT_BASE,
    PROBE_PORT_COUNT,
    backend_owner,
    vip_mac,
)

if TYPE_CHECKING:
    from random import Random

BackendKey = tuple[str, str, int]  # (load balancer id, backend ip, backend port)

# A new backend is first probed after this long (or its interval, if longer): the
# switches need a moment to install the flows that answer the backend's ARP for
# the VIP and bring its answers back; a probe before that would count as a failure.
FIRST_PROBE_DELAY: Final = 1.0


# ---- the state machine ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthState:
    healthy: bool
    successes: int = 0  # consecutive, while unhealthy
    failures: int = 0  # consecutive, while healthy


def step(state: HealthState, success: bool, *, rise: int, fall: int) -> HealthState:
    """One probe verdict applied to a backend's state."""
    if state.healthy:
        if success:
            return HealthState(True)
        failures = state.failures + 1
        return HealthState(False) if failures >= fall else HealthState(True, failures=failures)
    if not success:
        return HealthState(False)
    successes = state.successes + 1
    return HealthState(True) if successes >= rise else HealthState(False, successes=successes)


# ---- who is probed -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    key: BackendKey
    check: HealthCheckSpec
    ip_proto: int
    vip: int
    vip_mac: int
    backend_ip: int
    backend_port: int
    backend_mac: int
    host_id: str  # the switch the backend's port is bound to
    interface: str  # the backend's interface on that switch


def probe_targets(snapshot: Snapshot) -> tuple[ProbeTarget, ...]:
    """Every backend with a health check whose port is bound to a host's interface."""
    interfaces = {port.id: port.interface for port in snapshot.ports}
    targets: list[ProbeTarget] = []
    for lb in snapshot.load_balancers:
        if lb.health_check is None:
            continue
        candidates = bound_ports(snapshot, lb.network_id)
        for backend in lb.backends:
            owner = backend_owner(candidates, ip_to_int(backend.ip), backend.port_id)
            if owner is None:
                continue  # not addressable: the pipeline leaves it out of the group anyway
            interface = interfaces[owner.id]
            if interface is None:
                continue  # bound, but not plugged into its switch yet
            targets.append(
                ProbeTarget(
                    key=(lb.id, backend.ip, backend.port),
                    check=lb.health_check,
                    ip_proto=IP_PROTO_TCP if lb.protocol == "tcp" else IP_PROTO_UDP,
                    vip=ip_to_int(lb.vip),
                    vip_mac=vip_mac(lb.network_id, lb.vip),
                    backend_ip=ip_to_int(backend.ip),
                    backend_port=backend.port,
                    backend_mac=owner.mac,
                    host_id=owner.host_id,
                    interface=interface,
                )
            )
    return tuple(sorted(targets, key=lambda t: t.key))


def with_health(snapshot: Snapshot, health: Mapping[BackendKey, bool]) -> Snapshot:
    """The snapshot the pipeline sees: observed health instead of the stored one.

    A load balancer without a health check treats every backend as healthy."""
    changed = False
    lbs: list[LoadBalancerSpec] = []
    for lb in snapshot.load_balancers:
        backends = []
        lb_changed = False
        for backend in lb.backends:
            if lb.health_check is None:
                healthy = True
            else:
                healthy = health.get((lb.id, backend.ip, backend.port), backend.healthy)
            if healthy != backend.healthy:
                backend = dataclasses.replace(backend, healthy=healthy)
                lb_changed = True
            backends.append(backend)
        # Unchanged records stay the same objects: the pipeline's change detection
        # then costs a pointer comparison for them.
        lbs.append(dataclasses.replace(lb, backends=tuple(backends)) if lb_changed else lb)
        changed = changed or lb_changed
    if not changed:
        return snapshot
    return dataclasses.replace(snapshot, load_balancers=tuple(lbs))


# ---- the monitor (pure: time is passed in) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe to send: `frame` out of `interface` on `host_id`."""

    key: BackendKey
    host_id: str
    interface: str
    frame: bytes
    source_port: int


@dataclass(frozen=True, slots=True)
class HealthChange:
    key: BackendKey
    healthy: bool  # the verdict; kept as it was while the health is unknown
    unknown: str | None = None  # why there is no verdict now; None: there is one


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    changes: tuple[HealthChange, ...] = ()
    # Frames to send out of the backend's interface (the RST closing a SYN-ACK).
    follow_up: tuple[Probe, ...] = ()


@dataclass(slots=True)
class _Pending:
    target: ProbeTarget
    deadline: float
    seq: int
    delivered: bool = False


@dataclass(slots=True)
class _Tracked:
    target: ProbeTarget
    state: HealthState
    next_probe: float


class HealthMonitor:
    """Probe schedule, probes in flight and per-backend state. Not thread-safe."""

    def __init__(self, *, rng: Random) -> None:
        """`rng` draws the TCP probes' sequence numbers."""
        self._tracked: dict[BackendKey, _Tracked] = {}
        # (vip, probe source port) -> the probe waiting for its answer
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._ports = itertools.cycle(range(PROBE_PORT_BASE, PROBE_PORT_BASE + PROBE_PORT_COUNT))
        self._rng = rng
        # Backends whose last probe got no verdict (its switch did not send it or
        # did not confirm it), with the reason.
        self._unknown: dict[BackendKey, str] = {}

    def health(self) -> dict[BackendKey, bool]:
        return {key: t.state.healthy for key, t in self._tracked.items()}

    def unknown(self) -> dict[BackendKey, str]:
        """Backends whose switch is not answering, and why: their health is the last verdict."""
        return dict(self._unknown)

    def sync(
        self,
        targets: Iterable[ProbeTarget],
        stored: Mapping[BackendKey, bool],
        now: float,
        stored_unknown: Mapping[BackendKey, str | None] | None = None,
    ) -> list[HealthChange]:
        """Follow the desired backends. A backend seen for the first time starts from
        its stored health (so a restarted controller keeps what it knew). With
        `stored_unknown`, returns the changes that bring what is stored up to date
        (a verdict whose recording failed, e.g. while the database was down)."""
        wanted = {t.key: t for t in targets}
        known_before = set(self._tracked)
        for key in set(self._tracked) - set(wanted):
            del self._tracked[key]
            self._unknown.pop(key, None)
        for key, target in wanted.items():
            tracked = self._tracked.get(key)
            if tracked is None:
                first = now + max(FIRST_PROBE_DELAY, target.check.interval)
                self._tracked[key] = _Tracked(target, HealthState(stored.get(key, True)), first)
            else:
                if tracked.target.check.interval != target.check.interval:
                    tracked.next_probe = min(tracked.next_probe, now + target.check.interval)
                tracked.target = target
        for slot, pending in list(self._pending.items()):
            current = self._tracked.get(pending.target.key)
            if current is None or current.target != pending.target:
                del self._pending[slot]
        if stored_unknown is None:
            return []
        return [
            HealthChange(key, tracked.state.healthy, self._unknown.get(key))
            for key, tracked in sorted(self._tracked.items())
            if stored_unknown.get(key) != self._unknown.get(key)
            or (key in known_before and stored.get(key) != tracked.state.healthy)
        ]

    def due(self, now: float) -> list[Probe]:
        """The probes to send now; each is then awaited until its timeout."""
        sent: list[Probe] = []
        for key, tracked in sorted(self._tracked.items()):
            if tracked.next_probe > now:
                continue
            target = tracked.target
            tracked.next_probe = now + target.check.interval
            port = self._free_port(target.vip)
            if port is None:
                continue  # every probe port of this VIP is in flight; next interval
            seq = self._rng.getrandbits(32)
            ends = probes.Endpoints(
                target.vip_mac,
                target.backend_mac,
                target.vip,
                target.backend_ip,
                port,
                target.backend_port,
            )
            frame = (
                probes.tcp_probe(ends, seq=seq)
                if target.ip_proto == IP_PROTO_TCP
                else probes.udp_probe(ends)
            )
            self._pending[(target.vip, port)] = _Pending(target, now + target.check.timeout, seq)
            sent.append(Probe(key, target.host_id, target.interface, frame, port))
        return sent

    def _free_port(self, vip: int) -> int | None:
        for _ in range(PROBE_PORT_COUNT):
            port = next(self._ports)
            if (vip, port) not in self._pending:
                return port
        return None

    def not_sent(self, probe: Probe, vip: int) -> list[HealthChange]:
        """The probe never left (switch not connected): no verdict either way."""
        self._pending.pop((vip, probe.source_port), None)
        return self._no_verdict(probe.key, f"the switch of host {probe.host_id} is not connected")

    def delivered(self, probe: Probe, vip: int) -> None:
        """The switch confirmed it sent the probe: silence now means something."""
        pending = self._pending.get((vip, probe.source_port))
        if pending is not None and pending.target.key == probe.key:
            pending.delivered = True

    def on_reply(self, frame: bytes, now: float) -> ReplyOutcome:
        """A frame the switch sent up from the probe-reply flows."""
        try:
            parsed = probes.parse_frame(frame)
        except probes.FrameError:
            return ReplyOutcome()
        if parsed.proto == IP_PROTO_ICMP:
            inner = parsed.quoted
            if inner is None or inner.proto != IP_PROTO_UDP:
                return ReplyOutcome()
            slot = (inner.ends.src_ip, inner.ends.src_port)
            pending = self._pending.get(slot)
            if pending is None or inner.ends.dst_ip != pending.target.backend_ip:
                return ReplyOutcome()
            del self._pending[slot]
            return ReplyOutcome(self._verdict(pending.target, False))
        ends = parsed.ends
        slot = (ends.dst_ip, ends.dst_port)
        pending = self._pending.get(slot)
        if pending is None or ends.src_ip != pending.target.backend_ip:
            return ReplyOutcome()
        target = pending.target
        if parsed.proto == IP_PROTO_UDP:
            del self._pending[slot]
            return ReplyOutcome(self._verdict(target, True))
        expected_ack = (pending.seq + 1) & 0xFFFFFFFF
        if parsed.tcp_flags & probes.TCP_ACK and parsed.ack != expected_ack:
            return ReplyOutcome()  # not an answer to this probe (an old one, or forged)
        del self._pending[slot]
        if parsed.tcp_flags & probes.TCP_RST:
            return ReplyOutcome(self._verdict(target, False))
        if parsed.tcp_flags & probes.TCP_SYN and parsed.tcp_flags & probes.TCP_ACK:
            back = probes.Endpoints(
                target.vip_mac,
                target.backend_mac,
                target.vip,
                target.backend_ip,
                ends.dst_port,
                ends.src_port,
            )
            close = probes.tcp_frame(back, flags=probes.TCP_RST, seq=expected_ack)
            follow = Probe(target.key, target.host_id, target.interface, close, ends.dst_port)
            return ReplyOutcome(self._verdict(target, True), (follow,))
        return ReplyOutcome()

    def expire(self, now: float) -> list[HealthChange]:
        """Probes whose timeout passed: TCP silence is a failure, UDP silence a success;
        no verdict when the switch never confirmed sending the probe."""
        changes: list[HealthChange] = []
        for slot, pending in sorted(self._pending.items()):
            if pending.deadline > now:
                continue
            del self._pending[slot]
            if not pending.delivered:
                host = pending.target.host_id
                reason = f"the switch of host {host} is not answering"
                changes.extend(self._no_verdict(pending.target.key, reason))
                continue
            changes.extend(self._verdict(pending.target, pending.target.ip_proto == IP_PROTO_UDP))
        return changes

    def next_wakeup(self) -> float | None:
        times = [t.next_probe for t in self._tracked.values()]
        times += [p.deadline for p in self._pending.values()]
        return min(times) if times else None

    def _no_verdict(self, key: BackendKey, reason: str) -> list[HealthChange]:
        """The health of `key` is unknown: its state stays, the API is told why."""
        tracked = self._tracked.get(key)
        if tracked is None or self._unknown.get(key) == reason:
            return []
        self._unknown[key] = reason
        return [HealthChange(key, tracked.state.healthy, reason)]

    def _verdict(self, target: ProbeTarget, success: bool) -> tuple[HealthChange, ...]:
        tracked = self._tracked.get(target.key)
        if tracked is None:
            return ()
        was_unknown = self._unknown.pop(target.key, None) is not None
        before = tracked.state.healthy
        tracked.state = step(tracked.state, success, rise=target.check.rise, fall=target.check.fall)
        if tracked.state.healthy == before and not was_unknown:
            return ()
        return (HealthChange(target.key, tracked.state.healthy),)


__all__ = [
    "BackendKey",
    "HealthChange",
    "HealthMonitor",
    "HealthState",
    "Probe",
    "ProbeTarget",
    "ReplyOutcome",
    "probe_targets",
    "step",
    "with_health",
]
