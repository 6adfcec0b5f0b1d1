"""A change of ports wakes the hosts the ports are bound to first; the other hosts it
affects pass once those have, through a shared gate; after new hosts' passes the
objects alive are frozen for the collector (controller.service)."""

from __future__ import annotations

import gc
import threading

import pytest

from controller.core.model import PortSpec, SnapshotChange
from controller.service import OWNERS_FIRST_MAX_DELAY, _freeze_after, _owners, _run_after

pytestmark = pytest.mark.unit

A, B = "aaaaaaaa-0000-4000-8000-aaaaaaaaaaaa", "bbbbbbbb-0000-4000-8000-bbbbbbbbbbbb"
PORT = PortSpec("p", "net", "02:00:00:00:00:01", ("10.0.0.1",), A, "tap1")
UNBOUND = PortSpec("q", "net", "02:00:00:00:00:02", ("10.0.0.2",), None, None)


def test_the_owners_are_the_hosts_of_the_changed_ports_before_and_after() -> None:
    moved = PortSpec(PORT.id, PORT.network_id, PORT.mac, PORT.ips, B, "tap1")
    assert _owners(SnapshotChange(ports=((PORT, moved),))) == {A, B}
    assert _owners(SnapshotChange(ports=((None, PORT), (UNBOUND, None)))) == {A}
    assert _owners(SnapshotChange()) == frozenset()  # e.g. a health verdict
    assert _owners(None) == frozenset()  # unknown: every host at once


class FakeAgent:
    """Its pass ends when the test says so (whatever the timeout: it is only recorded)."""

    def __init__(self) -> None:
        self.waited: list[tuple[int, float]] = []
        self.finish = threading.Event()
        self.gates: list[threading.Semaphore | None] = []

    def wait_passed(self, number: int, timeout: float) -> bool:
        self.waited.append((number, timeout))
        return self.finish.wait(30)

    def run_pass(self, gate: threading.Semaphore | None = None) -> None:
        self.gates.append(gate)


def test_the_others_pass_after_the_owners_through_the_gate() -> None:
    owner, other = FakeAgent(), FakeAgent()
    gate = threading.Semaphore(1)
    waker = threading.Thread(target=_run_after, args=([(owner, 7)], [other], gate))
    waker.start()
    try:
        for _ in range(10_000):  # until the waker waits for the owner's pass 7
            if owner.waited:
                break
            threading.Event().wait(0.001)
        [(number, timeout)] = owner.waited
        assert number == 7 and 0 < timeout <= OWNERS_FIRST_MAX_DELAY
        assert other.gates == []
    finally:
        owner.finish.set()
        waker.join(timeout=10)
    assert other.gates == [gate]


def test_objects_alive_after_the_passes_of_new_hosts_are_frozen() -> None:
    agent = FakeAgent()
    agent.finish.set()
    gc.unfreeze()
    try:
        _freeze_after([(agent, 3)])  # type: ignore[list-item]
        assert agent.waited and agent.waited[0][0] == 3
        assert gc.get_freeze_count() > 0  # the collector skips them from now on
    finally:
        gc.unfreeze()
