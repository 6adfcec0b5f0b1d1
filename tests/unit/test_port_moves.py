"""Make before break for ports moving between hosts (controller.core.port_moves)."""

from __future__ import annotations

import dataclasses

import pytest

from controller.core.model import PortSpec, Snapshot, SnapshotChange
from controller.core.port_moves import held_snapshot, moves_in

pytestmark = pytest.mark.unit

ON_A = PortSpec("p1", "net", "02:00:00:00:00:01", ("10.0.0.5",), "host-a", "tap1", "vm-1")
ON_B = dataclasses.replace(ON_A, host_id="host-b")
OTHER = PortSpec("p2", "net", "02:00:00:00:00:02", ("10.0.0.6",), "host-c", "tap2", "vm-2")


def test_only_a_binding_from_one_host_to_another_is_a_move() -> None:
    bound = dataclasses.replace(ON_A, id="p3", mac="02:00:00:00:00:03")
    unbound = dataclasses.replace(bound, host_id=None, interface=None)
    renamed = dataclasses.replace(OTHER, interface="tap9")
    change = SnapshotChange(
        ports=((ON_A, ON_B), (unbound, bound), (OTHER, renamed), (None, OTHER), (OTHER, None))
    )
    moves, others = moves_in(change)
    assert (
        list(moves) == ["p1"] and moves["p1"].before == ON_A and moves["p1"].destination == "host-b"
    )
    assert others == {"p2", "p3"}


def test_every_host_but_the_destination_keeps_the_port_where_it_was() -> None:
    snapshot = Snapshot(revision=2, ports=(ON_B, OTHER))
    moves, _ = moves_in(SnapshotChange(ports=((ON_A, ON_B),)))
    assert held_snapshot(snapshot, moves, "host-b") is snapshot
    for host in ("host-a", "host-c"):
        held = held_snapshot(snapshot, moves, host)
        assert held.ports == (ON_A, OTHER) and held.revision == 2
    assert held_snapshot(snapshot, {}, "host-a") is snapshot
