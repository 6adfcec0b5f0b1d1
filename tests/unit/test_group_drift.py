"""controller.core.group_drift: group descriptions, OFPGC_MODIFY, and which groups drifted.

The wire formats are checked against os-ken's serializer and parser; what OVS writes
back for our groups is checked with a real switch in tests/ovs/test_reconcile_ovs.py.
"""

from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.core import ofmsg
from controller.core.flows import Bucket, Group, Output
from controller.core.group_drift import (
    GroupDriftCheck,
    describe,
    group_modify,
    parse_group_descs,
)

pytestmark = pytest.mark.unit


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser


FLOOD = Group(0x11, "all", (Bucket((Output(1),)), Bucket((Output(2),))))
LB = Group(0x22, "select", (Bucket((Output(3),), weight=3), Bucket((Output(4),), weight=1)))
EDITED_LB = Group(0x22, "select", (Bucket((Output(9),), weight=1),))


def os_ken_buckets(group: Group) -> list[object]:
    """The buckets as os-ken objects (the groups here only output)."""
    buckets = []
    for bucket in group.buckets:
        actions = [parser.OFPActionOutput(a.port, a.max_len) for a in bucket.actions]
        buckets.append(parser.OFPBucket(bucket.weight, bucket.watch_port, ofp.OFPG_ANY, actions))
    return buckets


def desc_entry(group: Group) -> bytes:
    """An ofp_group_desc entry for `group`, as os-ken serializes its buckets."""
    buf = bytearray()
    for bucket in os_ken_buckets(group):
        bucket.serialize(buf, len(buf))
    head = struct.pack("!HBxI", 8 + len(buf), ofmsg.GROUP_TYPES[group.type], group.group_id)
    return head + bytes(buf)


def body(*groups: Group) -> bytes:
    return b"".join(desc_entry(g) for g in groups)


def test_group_modify_is_os_kens_ofpgc_modify() -> None:
    oracle = parser.OFPGroupMod(
        FakeDatapath(), ofp.OFPGC_MODIFY, ofp.OFPGT_SELECT, LB.group_id, os_ken_buckets(LB)
    )
    oracle.set_xid(0)
    oracle.serialize()
    assert group_modify(LB) == bytes(oracle.buf)


def test_a_desc_entry_and_the_group_mod_describe_the_group_alike() -> None:
    entries = body(FLOOD, LB)
    # os-ken reads the same entries back (the oracle for the entry layout).
    first = parser.OFPGroupDescStats.parser(entries, 0)
    assert (first.group_id, first.type, len(first.buckets)) == (0x11, ofp.OFPGT_ALL, 2)
    assert parse_group_descs(entries) == {
        0x11: describe(ofmsg.group_add(FLOOD)),
        0x22: describe(group_modify(LB)),
    }
    assert describe(ofmsg.group_add(LB)) != describe(ofmsg.group_add(EDITED_LB))


def test_parse_group_descs_rejects_a_corrupt_length() -> None:
    entry = bytearray(desc_entry(FLOOD))
    entry[0:2] = (len(entry) + 8).to_bytes(2, "big")
    with pytest.raises(ValueError, match="length"):
        parse_group_descs(bytes(entry))


def test_only_a_group_with_other_content_under_a_desired_id_drifted() -> None:
    check = GroupDriftCheck()
    desired = {FLOOD.group_id: FLOOD, LB.group_id: LB}
    assert check.drifted(desired) == []  # nothing read yet
    check.observe(parse_group_descs(body(FLOOD, EDITED_LB)))
    assert check.drifted(desired) == [LB]
    assert check.drifted(desired) == []  # compared once per read
    # Missing (to be added) and undesired (to be deleted) groups are the plan's, not drift.
    check.observe(parse_group_descs(body(EDITED_LB)))
    assert check.drifted({FLOOD.group_id: FLOOD}) == []


def test_a_repair_that_does_not_stick_is_taken_as_the_switchs_form() -> None:
    check = GroupDriftCheck()
    desired = {LB.group_id: LB}
    check.observe(parse_group_descs(body(EDITED_LB)))
    assert check.drifted(desired) == [LB]
    # Read right after the modify: set back as sent, so nothing is accepted.
    assert check.repaired([LB], parse_group_descs(body(LB))) == []
    # A switch writing LB otherwise (here: as EDITED_LB) even right after the modify.
    check.observe(parse_group_descs(body(EDITED_LB)))
    assert check.drifted(desired) == [LB]
    assert check.repaired([LB], parse_group_descs(body(EDITED_LB))) == [LB]
    check.observe(parse_group_descs(body(EDITED_LB)))
    assert check.drifted(desired) == []  # no repair every audit
    # Another edit, away from the switch's own form, is drift again.
    check.observe(parse_group_descs(body(FLOOD, Group(0x22, "select", ()))))
    assert check.drifted(desired) == [LB]
