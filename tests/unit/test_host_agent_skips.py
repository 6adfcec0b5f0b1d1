"""A host agent's pass for a change that leaves its ports and the hosts alone skips its
OVSDB intents and port reports (both cost O(ports bound here)); a change of one of its
ports, of a host record, or an unknown change, does not.

The agent runs its real worker thread; OVSDB and the store are recording fakes (no
switch is connected: the pass ensures OVSDB, then reports the ports DOWN).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from controller.core.model import (
    HostSpec,
    HostStatus,
    NetworkSpec,
    PortSpec,
    PortStatusUpdate,
    Snapshot,
    SnapshotChange,
)
from controller.host_agent import ControllerConfig, HostAgent
from controller.ovsdb import BridgeIntent, InterfaceInfo

pytestmark = pytest.mark.unit

HERE = HostSpec("aaaaaaaa-0000-4000-8000-aaaaaaaaaaaa", "here", "unix:/nonexistent/db.sock")
THERE = HostSpec("bbbbbbbb-0000-4000-8000-bbbbbbbbbbbb", "there", "unix:/nonexistent/db.sock")
NET = NetworkSpec("net", "t", "n", "vlan", 10)
MINE = PortSpec("mine", "net", "02:00:00:00:00:01", ("10.0.0.1",), HERE.id, "tap1")
OTHER = PortSpec("other", "net", "02:00:00:00:00:02", ("10.0.0.2",), THERE.id, "tap2")
PASS_TIMEOUT = 30.0


class WatchedPorts(tuple[PortSpec, ...]):
    """A snapshot's ports that count how often something walks through all of them."""

    walks = 0

    def __iter__(self) -> Any:
        WatchedPorts.walks += 1
        return super().__iter__()


class RecordingOvsdb:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def ensure_bridge(self, intent: BridgeIntent) -> bool:
        self.calls.append("bridge")
        return False

    def ensure_uplink(self, bridge: str, interface: str) -> bool:
        return False

    def ensure_tunnels(self, bridge: str, tunnels: Mapping[str, tuple[str, str | None]]) -> bool:
        return False

    def interfaces(self, bridge: str) -> dict[str, InterfaceInfo]:
        return {}

    def ensure_vm_port(self, bridge: str, interface: str, **_: Any) -> bool:
        self.calls.append(f"vm-port {interface}")
        return True

    def managed_vm_ports(self, bridge: str) -> dict[str, InterfaceInfo]:
        return {}

    def remove_port(self, bridge: str, interface: str) -> bool:
        return True

    def close(self) -> None:
        pass


class RecordingStore:
    def __init__(self) -> None:
        self.port_reports: list[list[PortStatusUpdate]] = []

    def record_host_status(self, status: HostStatus) -> None:
        pass

    def record_port_status(self, updates: Sequence[PortStatusUpdate]) -> None:
        self.port_reports.append(list(updates))

    def record_backend_health(self, updates: Sequence[Any]) -> None:
        pass


def test_a_change_elsewhere_skips_ovsdb_and_reports() -> None:
    ovsdb, store = RecordingOvsdb(), RecordingStore()
    # connect_grace 0: a switch that never connected has its ports reported DOWN at once.
    config = ControllerConfig(connect_grace=0.0, reconcile_interval=3600.0)
    agent = HostAgent(HERE, config=config, store=store, ovsdb_factory=lambda _: ovsdb)  # type: ignore[arg-type]
    snapshot = Snapshot(1, (HERE, THERE), (NET,), (MINE, OTHER))
    agent.start()
    try:

        def pass_with(new: Snapshot, change: SnapshotChange | None) -> tuple[list[str], int]:
            ovsdb.calls.clear()
            reports = len(store.port_reports)
            assert agent.wait_passed(agent.update(new, change=change), PASS_TIMEOUT)
            return list(ovsdb.calls), len(store.port_reports) - reports

        calls, reports = pass_with(snapshot, None)  # the first snapshot: everything
        assert calls == ["bridge", "vm-port tap1"] and reports == 1

        # Another host's port in one of our networks changed: flows only, and nothing
        # walks through every port of the snapshot (the flows' engine compares tuples).
        moved = dataclasses.replace(OTHER, ips=("10.0.0.3",))
        elsewhere = dataclasses.replace(snapshot, revision=2, ports=WatchedPorts((MINE, moved)))
        WatchedPorts.walks = 0
        assert pass_with(elsewhere, SnapshotChange(ports=((OTHER, moved),))) == ([], 0)
        assert WatchedPorts.walks == 0

        # Our own port changed: OVSDB intents and reports again.
        mine = dataclasses.replace(MINE, ips=("10.0.0.4",))
        here = dataclasses.replace(elsewhere, revision=3, ports=(mine, moved))
        assert pass_with(here, SnapshotChange(ports=((MINE, mine),))) == (
            ["bridge", "vm-port tap1"],
            1,
        )

        # A host record changed (tunnels, uplink): OVSDB again; our ports did not change.
        calls, reports = pass_with(here, SnapshotChange(hosts=((THERE, THERE),)))
        assert calls == ["bridge", "vm-port tap1"]

        # An unknown change (a full load, a move confirmed): everything.
        calls, reports = pass_with(here, None)
        assert calls == ["bridge", "vm-port tap1"]
    finally:
        agent.stop()
