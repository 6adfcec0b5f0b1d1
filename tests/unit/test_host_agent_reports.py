"""What a host agent may leave out on the way to a port's activation: the OVSDB look and
second pass after the switch announces an interface the agent itself is plugging, and
a host-status write whose only news is the flow and group counts."""

from __future__ import annotations

import dataclasses

import pytest

from controller.core.model import HostStatus
from controller.host_agent import only_counts_differ, plugged_by_us

pytestmark = pytest.mark.unit

STATUS = HostStatus(
    host_id="h",
    ovsdb_connected=True,
    openflow_connected=True,
    datapath_id="0000000000000001",
    last_error=None,
    flow_count=40,
    group_count=2,
)


def test_interfaces_being_plugged_are_explained() -> None:
    before = {"br-int": 65534, "vx1": 1}
    assert plugged_by_us(before, {**before, "tap1": 2}, {"tap1"})
    assert plugged_by_us(before, {**before, "tap1": 2, "tap2": 3}, {"tap1", "tap2", "tap3"})


def test_any_other_port_change_is_not() -> None:
    before = {"br-int": 65534, "vx1": 1, "tap1": 2}
    assert not plugged_by_us(before, {**before, "tap9": 3}, set())  # someone else plugged it
    assert not plugged_by_us(before, {**before, "tap9": 3}, {"tap2"})
    gone = {"br-int": 65534, "tap1": 2, "tap2": 3}  # vx1 went while tap2 came
    assert not plugged_by_us(before, gone, {"tap2"})
    renumbered = {"br-int": 65534, "vx1": 1, "tap1": 7}
    assert not plugged_by_us(before, renumbered, {"tap1"})


def test_counts_alone_are_told_apart() -> None:
    assert only_counts_differ(dataclasses.replace(STATUS, flow_count=42), STATUS)
    assert only_counts_differ(dataclasses.replace(STATUS, group_count=3), STATUS)
    assert not only_counts_differ(STATUS, None)  # nothing written yet
    for change in (
        {"last_error": "OVSDB: refused"},
        {"openflow_connected": False, "flow_count": None, "group_count": None},
        {"ovsdb_connected": False},
        {"datapath_id": "0000000000000002", "flow_count": 1},
    ):
        assert not only_counts_differ(dataclasses.replace(STATUS, **change), STATUS), change
