"""Make before break when a port moves between hosts (live migration).

When a port's binding moves from host A to host B, every switch but B's keeps the
port where it was (its forwarding toward A, A's own flows) until B has confirmed
the port's flows; only then do the others follow. So a peer's frames go to the
old place until the new one can take them, never to a destination that would
drop them, and the source's flows go only after the destination's are there.

Pure: which bindings moved in a change, and the snapshot a host is given while
moves are pending.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from controller.core.model import PortSpec, Snapshot, SnapshotChange

__all__ = ["PendingMove", "held_snapshot", "moves_in"]


@dataclass(frozen=True, slots=True)
class PendingMove:
    before: PortSpec  # the binding the other hosts keep meanwhile
    after: PortSpec  # the binding the destination works on

    @property
    def destination(self) -> str:
        assert self.after.host_id is not None
        return self.after.host_id


def moves_in(change: SnapshotChange) -> tuple[dict[str, PendingMove], set[str]]:
    """The ports `change` moves from one host to another, and the ids of the other ports
    it changes (a pending move of those, if any, is over: the newest binding stands)."""
    moves: dict[str, PendingMove] = {}
    others: set[str] = set()
    for before, after in change.ports:
        spec = after if after is not None else before
        assert spec is not None
        port_id = spec.id
        if (
            before is not None
            and after is not None
            and before.host_id is not None
            and after.host_id is not None
            and before.host_id != after.host_id
        ):
            moves[port_id] = PendingMove(before, after)
        else:
            others.add(port_id)
    return moves, others


def held_snapshot(snapshot: Snapshot, pending: Mapping[str, PendingMove], host_id: str) -> Snapshot:
    """`snapshot` as `host_id` is to see it: ports moving to another host still where
    they were. The destination (and any host when nothing is pending) gets it as is."""
    held = {
        port_id: move.before for port_id, move in pending.items() if move.destination != host_id
    }
    if not held:
        return snapshot
    return dataclasses.replace(
        snapshot, ports=tuple(held.get(port.id, port) for port in snapshot.ports)
    )
