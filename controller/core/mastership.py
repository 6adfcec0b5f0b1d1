"""Which controller replica masters which switch: pure decisions, no I/O.

Replicas share one PostgreSQL database. Membership and mastership are PostgreSQL
advisory locks held by each replica's dedicated connection (see
`api.store.replicas`): a replica is live while it holds its own lock, a switch is
mastered by whoever holds the switch's lock, and each new master gets the next
generation id of that switch (the OpenFlow fencing token). What is decided here
is only which locks a replica should try to take or give up on each poll:

- spread: a switch's preferred owner is its rendezvous-hash (highest random
  weight) winner among the live replicas, so a replica joining or leaving moves
  only the switches it wins or held;
- a replica tries to lock only the switches it is preferred for, unless a switch
  has had no master for longer than `grace` (its preferred owner is slow or
  wedged): then any live replica may take it;
- rebalance: a replica holding a switch that now prefers another live replica
  releases it; the flows stay installed on the switch until the new master
  reconciles them, so no packet is lost meanwhile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A controller replica as registered in `controller_replicas`."""

    id: str
    # Name of this replica's relay socket in the run directory of a host reached
    # over a local unix: OVSDB socket (every replica listens on its own).
    relay_socket: str
    # Controller target for hosts reached over tcp:/ssl: ("ssl:192.0.2.1:6654"), if any.
    network_target: str | None = None


@dataclass(frozen=True, slots=True)
class MastershipView:
    """One poll of the database: live replicas and the switches some replica masters."""

    replicas: tuple[ReplicaInfo, ...]
    mastered: frozenset[str]  # host ids whose switch lock is held (by anyone)


@dataclass(slots=True)
class MastershipPlan:
    acquire: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)


class MastershipStore(Protocol):
    """What the controller needs from the database to share switches with other replicas."""

    def join(self, replica: ReplicaInfo) -> None:
        """Take this replica's membership lock and register it (idempotent)."""

    def view(self, host_ids: Iterable[str]) -> MastershipView: ...

    def try_acquire(self, host_id: str) -> int | None:
        """Lock the switch; on success record this replica as its master with the next
        generation id, returned. None: another replica holds it."""

    def release(self, host_id: str) -> None: ...

    def held(self) -> frozenset[str]:
        """Host ids whose switch lock this replica holds."""

    def leave(self) -> None:
        """Drop every lock and the registration (also what a dead process does)."""


def _weight(replica_id: str, host_id: str) -> int:
    digest = hashlib.blake2b(f"{replica_id}/{host_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_owner(host_id: str, replica_ids: Iterable[str]) -> str | None:
    """The rendezvous-hash winner for the switch of `host_id` (ties broken by id)."""
    return max(replica_ids, key=lambda r: (_weight(r, host_id), r), default=None)


def plan_mastership(
    me: str,
    view: MastershipView,
    host_ids: Iterable[str],
    held: frozenset[str],
    unmastered_since: dict[str, float],
    now: float,
    grace: float,
) -> MastershipPlan:
    """Locks to try and to give up this poll. `unmastered_since` (host id -> when it
    was first seen without a master) is the caller's memory between polls; updated here."""
    live = [r.id for r in view.replicas]
    if me not in live:
        live.append(me)  # our own row may lag our lock by a poll; we are alive
    plan = MastershipPlan()
    wanted = set(host_ids)
    for host_id in list(unmastered_since):
        if host_id not in wanted or host_id in view.mastered:
            del unmastered_since[host_id]
    for host_id in sorted(wanted):
        owner = preferred_owner(host_id, live)
        if host_id in held:
            if owner != me:
                plan.release.append(host_id)
            continue
        if host_id in view.mastered:
            continue
        since = unmastered_since.setdefault(host_id, now)
        if owner == me or now - since >= grace:
            plan.acquire.append(host_id)
    plan.release.extend(sorted(held - wanted))  # hosts deleted from the desired state
    return plan


def controller_targets(
    relay_dir: str | None, replicas: Iterable[ReplicaInfo], *, own: str | None = None
) -> tuple[str, ...]:
    """Every live replica's controller target for one host: a unix: relay socket in
    the host's run directory (`relay_dir`) for a local host, else each replica's
    network target. `own` (this replica's target) is always included."""
    targets = set()
    for replica in replicas:
        if relay_dir is not None:
            targets.add(f"unix:{relay_dir}/{replica.relay_socket}")
        elif replica.network_target is not None:
            targets.add(replica.network_target)
    if own is not None:
        targets.add(own)
    return tuple(sorted(targets))


def advisory_key(name: str) -> int:
    """A signed 32-bit key for `name` (PostgreSQL's two-key advisory locks take int4)."""
    value = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big")
    return value - (1 << 32) if value >= 1 << 31 else value
