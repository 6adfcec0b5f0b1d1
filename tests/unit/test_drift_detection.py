"""Cheap drift detection, the pure parts: the messages, the flow-monitor notes kept by
a switch channel, and the plan that purges suspect cookies.

The same messages against a real OVS: tests/ovs/test_reconcile_ovs.py.
"""

from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.core import ofmsg
from controller.core.sync import plan_flow_changes, plan_sync
from controller.openflow.channel import SwitchChannel

pytestmark = pytest.mark.unit

OURS = 0x0FAB_0000_0000_0001


class _Datapath:
    ofproto = ofp
    ofproto_parser = parser


def test_aggregate_request_matches_os_ken() -> None:
    oracle = parser.OFPAggregateStatsRequest(
        _Datapath(), 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()
    )
    oracle.set_xid(44)
    oracle.serialize()
    assert ofmsg.aggregate_stats_request(44) == bytes(oracle.buf)
    assert ofmsg.parse_aggregate_flow_count(struct.pack("!QQI4x", 7, 900, 100_000)) == 100_000


def test_flow_monitor_request_is_an_onf_experimenter_multipart() -> None:
    request = ofmsg.flow_monitor_request(9, monitor_id=3)
    version, msg_type, length, xid = ofmsg.parse_header(request)
    assert (version, msg_type, length, xid) == (4, ofp.OFPT_MULTIPART_REQUEST, len(request), 9)
    mp_type, experimenter, exp_type = struct.unpack_from("!H6xII", request, 8)
    assert (mp_type, experimenter, exp_type) == (0xFFFF, 0x4F4E4600, 1870)
    monitor_id, flags, _match_len, out_port, table = struct.unpack_from("!IHHIB", request, 24)
    # add | delete | modify; no initial dump, no actions, not our own changes in full
    assert (monitor_id, flags, out_port, table) == (3, 0b1110, ofp.OFPP_ANY, 0xFF)
    assert len(request) % 8 == 0


def _full_note(event: int, table: int, cookie: int, extra: int = 8) -> bytes:
    length = 24 + extra
    return struct.pack("!HHHHHHHBxQ", length, event, 0, 100, 0, 0, 4, table, cookie) + bytes(extra)


def test_flow_updates_are_parsed_to_event_table_and_cookie() -> None:
    abbrev = struct.pack("!HHI", 8, ofmsg.FLOW_UPDATE_ABBREV, 77)
    body = (
        _full_note(ofmsg.FLOW_UPDATE_DELETED, 3, OURS)
        + abbrev
        + _full_note(ofmsg.FLOW_UPDATE_MODIFIED, 8, 0x1234, extra=16)
    )
    assert ofmsg.parse_flow_updates(body) == [
        (ofmsg.FLOW_UPDATE_DELETED, 3, OURS),
        (ofmsg.FLOW_UPDATE_ABBREV, 0, 0),
        (ofmsg.FLOW_UPDATE_MODIFIED, 8, 0x1234),
    ]
    with pytest.raises(ValueError, match="length"):
        ofmsg.parse_flow_updates(body[:-8])


def test_the_channel_keeps_others_changes_and_drops_our_own() -> None:
    channel = SwitchChannel(1, lambda data: True)
    woken: list[bool] = []
    channel.set_change_listener(lambda: woken.append(True))
    channel.on_flow_updates(struct.pack("!HHI", 8, ofmsg.FLOW_UPDATE_ABBREV, 5))
    assert not woken and channel.take_flow_updates().changes == ()
    channel.on_flow_updates(_full_note(ofmsg.FLOW_UPDATE_ADDED, 0, 0))
    assert woken
    batch = channel.take_flow_updates()
    assert batch.changes == ((ofmsg.FLOW_UPDATE_ADDED, 0, 0),) and not batch.paused
    assert channel.take_flow_updates().changes == ()


def test_a_pause_is_reported_until_a_take_after_the_resume() -> None:
    channel = SwitchChannel(1, lambda data: True)
    channel.on_monitor_paused()
    assert channel.take_flow_updates().paused
    assert channel.take_flow_updates().paused  # still paused: notes may still be missing
    channel.on_monitor_resumed()
    assert channel.take_flow_updates().paused  # the take covering the resume
    assert not channel.take_flow_updates().paused


def test_suspect_cookies_are_purged_then_added_again_if_desired() -> None:
    plan = plan_sync(
        desired_flows=[1, 2, 3],
        actual_flows=[1, 2, 3, 4],
        desired_groups=[],
        actual_groups=[],
        suspect_flows=[2, 4, 9],
    )
    assert plan.purge_flows == (2, 4, 9)
    assert plan.add_flows == (2,)  # desired: back after the purge
    assert plan.delete_flows == ()  # 4 is stale, but the purge deletes it already
    assert not plan.empty


def test_incremental_plan_touches_only_what_changed() -> None:
    actual = {1, 2, 3, 6}
    add, delete, purge = plan_flow_changes(
        added=[4, 5, 2], removed=[3, 8, 6], actual=actual, skip={5}, suspects={1, 6, 7},
        desired={1, 2, 4, 5},
    )  # fmt: skip
    # 2 is there already, 5 was rejected by the switch; suspect 1 is desired: back after
    # its purge, suspect 7 (foreign or undesired) only purged.
    assert add == (1, 4)
    assert delete == (3,)  # 8 never made it to the switch; 6 goes with the purge
    assert purge == (1, 6, 7)
