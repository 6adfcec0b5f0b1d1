"""controller.core.ofmsg against os-ken's own serializer, byte for byte.

os-ken is the oracle: every message is also built as the equivalent os-ken object
(OFPFlowMod, OFPGroupMod, NX actions, ONF bundle messages) with a fake datapath,
serialized, and the two byte strings must be identical.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.core import flows as of
from controller.core import ofmsg

pytestmark = pytest.mark.unit

MAC_FIELDS = {"eth_dst", "eth_src", "arp_sha", "arp_tha"}
IPV4_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
IPV6_FIELDS = {"ipv6_src", "ipv6_dst", "ipv6_nd_target"}
MAC_FIELDS |= {"ipv6_nd_sll", "ipv6_nd_tll"}
# OVS's ERICOXM_OF fields, which os-ken does not know: checked byte by byte below.
NOT_IN_OS_KEN = {"nd_reserved", "nd_options_type"}
ORACLE_FIELDS = {name: bits for name, bits in of.FIELD_BITS.items() if name not in NOT_IN_OS_KEN}


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser


DP = FakeDatapath()


# ---- the oracle: the same thing built from os-ken objects ---------------------------


def user_value(name: str, value: int) -> Any:
    if name in MAC_FIELDS:
        return of.int_to_mac(value)
    if name in IPV4_FIELDS:
        return of.int_to_ip(value)
    if name in IPV6_FIELDS:
        return of.int_to_ipv6(value)
    return value


def oracle_match(m: of.Match) -> Any:
    kwargs: dict[str, Any] = {}
    for f in m.fields:
        value = user_value(f.name, f.value)
        kwargs[f.name] = value if f.mask is None else (value, user_value(f.name, f.mask))
    return parser.OFPMatch(**kwargs)


def oracle_action(action: of.Action) -> Any:
    if isinstance(action, of.Output):
        return parser.OFPActionOutput(action.port, action.max_len)
    if isinstance(action, of.GroupAction):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, of.PushVlan):
        return parser.OFPActionPushVlan(action.ethertype)
    if isinstance(action, of.PopVlan):
        return parser.OFPActionPopVlan()
    if isinstance(action, of.SetField):
        return parser.OFPActionSetField(**{action.field: user_value(action.field, action.value)})
    if isinstance(action, of.RegMove):
        return parser.NXActionRegMove(
            src_field=action.src,
            dst_field=action.dst,
            n_bits=action.n_bits,
            src_ofs=action.src_ofs,
            dst_ofs=action.dst_ofs,
        )
    if isinstance(action, of.Resubmit):
        return parser.NXActionResubmitTable(in_port=0xFFF8, table_id=action.table)
    if isinstance(action, of.Multipath):
        return parser.NXActionMultipath(
            fields=3,  # NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP
            basis=action.basis,
            algorithm=0,  # NX_MP_ALG_MODULO_N
            max_link=action.n_links - 1,
            arg=0,
            ofs_nbits=action.n_bits - 1,
            dst=action.dst,
        )
    if isinstance(action, of.Ct):
        nested = []
        if action.nat is not None:
            nat = action.nat
            nested.append(
                parser.NXActionNAT(
                    # NX_NAT_F_DST, NX_NAT_F_SRC
                    flags=2 if nat.dst_ip is not None else 1 if nat.src_ip is not None else 0,
                    range_ipv4_min=""
                    if nat.dst_ip is None and nat.src_ip is None
                    else of.int_to_ip(nat.dst_ip if nat.dst_ip is not None else nat.src_ip or 0),
                    range_proto_min=nat.dst_port if nat.src_ports is None else nat.src_ports[0],
                    range_proto_max=None if nat.src_ports is None else nat.src_ports[1],
                )
            )
        return parser.NXActionCT(
            flags=1 if action.commit else 0,
            zone_src="",
            zone_ofs_nbits=action.zone,
            recirc_table=0xFF if action.table is None else action.table,
            alg=0,
            actions=nested,
        )
    raise AssertionError(f"no oracle for {action!r}")


def oracle_flow_mod(flow: of.Flow, cookie: int) -> bytes:
    return serialized(oracle_flow_mod_msg(flow, cookie))


def oracle_flow_mod_msg(flow: of.Flow, cookie: int) -> Any:
    instructions: list[Any] = []
    if flow.actions:
        instructions.append(
            parser.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, [oracle_action(a) for a in flow.actions]
            )
        )
    if flow.write_metadata is not None:
        instructions.append(parser.OFPInstructionWriteMetadata(*flow.write_metadata))
    if flow.goto_table is not None:
        instructions.append(parser.OFPInstructionGotoTable(flow.goto_table))
    return parser.OFPFlowMod(
        DP,
        cookie=cookie,
        cookie_mask=0,
        table_id=flow.table,
        command=ofp.OFPFC_ADD,
        idle_timeout=0,
        hard_timeout=0,
        priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        flags=0,
        match=oracle_match(flow.match),
        instructions=instructions,
    )


def serialized(msg: Any, xid: int = 0) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


# ---- the flows to compare ---------------------------------------------------------

RNG = random.Random(20240613)


def sample(bits: int) -> int:
    # Nonzero in the top and bottom byte of the field, so truncation and byte order show.
    return RNG.getrandbits(bits) | 1 | (1 << (bits - 1))


def field_matches() -> list[of.Match]:
    out = []
    for name, bits in ORACLE_FIELDS.items():
        out.append(of.match(**{name: sample(bits)}))
        out.append(of.match(**{name: (sample(bits), sample(bits))}))
    return out


SINGLE_FIELD_MATCHES = field_matches()

MULTI_FIELD_MATCHES = [
    of.match(),
    of.match(in_port=3, eth_type=0x0800, ip_proto=6, tcp_dst=80, ipv4_dst=of.ip_to_int("10.0.0.9")),
    of.match(vlan_vid=of.VLAN_PRESENT | 5, eth_dst=of.mac_to_int("02:00:00:00:00:01")),
    of.match(vlan_vid=(of.VLAN_PRESENT, of.VLAN_PRESENT)),
    of.match(vlan_vid=0),
    of.match(eth_dst=(0x010000000000, 0x010000000000), reg3=7, metadata=(0x10, 0xFF)),
    of.match(
        ct_state=(0x21, 0x21),
        ct_zone=9,
        ct_mark=(1, 3),
        reg0=1,
        tcp_flags=(2, 0x12),
        eth_type=0x0800,
        ip_proto=6,
    ),
    of.match(
        eth_type=0x0806,
        arp_op=1,
        arp_spa=of.ip_to_int("10.0.0.1"),
        arp_tpa=of.ip_to_int("10.0.0.2"),
        arp_sha=of.mac_to_int("02:00:00:00:00:03"),
        arp_tha=0,
    ),
    of.match(tunnel_id=0x1234, in_port=7, reg7=(0, 0xFFFF0000)),
    of.match(
        eth_type=0x0800, ip_proto=17, udp_src=68, udp_dst=67, ipv4_src=(0x0A000000, 0xFF000000)
    ),
    of.match(eth_type=0x0800, ip_proto=1, icmpv4_type=8, icmpv4_code=0),
    of.match(**{f"reg{i}": i + 1 for i in range(8)}),
]

ACTION_LISTS: list[tuple[of.Action, ...]] = [
    (of.Output(1),),
    (of.Output(of.OFPP_CONTROLLER, max_len=128),),
    (of.Output(0xFFFFFFF8),),
    (of.GroupAction(42),),
    (of.PushVlan(), of.SetField("vlan_vid", of.VLAN_PRESENT | 100), of.Output(2)),
    (of.PushVlan(0x88A8),),
    (of.PopVlan(), of.Output(1)),
    (of.RegMove("reg0", "reg1", 32),),
    (of.RegMove("in_port", "reg2", 16, src_ofs=0, dst_ofs=16),),
    (of.RegMove("eth_src", "eth_dst", 48),),
    (of.RegMove("ct_mark", "reg5", 8, src_ofs=24, dst_ofs=0), of.RegMove("reg6", "tunnel_id", 32)),
    (of.RegMove("tcp_flags", "reg0", 12),),  # an 8-byte experimenter header inside reg_move
    (of.Resubmit(5),),
    (of.Resubmit(0), of.Resubmit(254), of.Output(4)),
    (of.Ct(),),
    (of.Ct(zone=7, table=3),),
    (of.Ct(zone=65535, commit=True),),
    (of.Ct(zone=5, nat=of.Nat()),),
    (of.Ct(zone=5, table=9, nat=of.Nat()),),
    (of.Ct(zone=3, commit=True, table=4, nat=of.Nat(dst_ip=of.ip_to_int("10.0.0.5"))),),
    (
        of.Ct(
            zone=3, commit=True, table=4, nat=of.Nat(dst_ip=of.ip_to_int("10.0.0.5"), dst_port=8080)
        ),
    ),
    (
        of.Ct(zone=1, commit=True, nat=of.Nat(dst_ip=of.ip_to_int("192.168.1.1"), dst_port=80)),
        of.Output(3),
    ),
    *[(of.SetField(name, sample(bits)),) for name, bits in ORACLE_FIELDS.items()],
    (of.SetField("reg7", 1), of.Multipath("reg6", 5), of.Resubmit(4)),
    (of.Ct(zone=9, commit=True, nat=of.Nat(src_ip=of.ip_to_int("10.0.0.5"))),),
    (
        of.Ct(
            zone=9,
            commit=True,
            nat=of.Nat(src_ip=of.ip_to_int("10.0.0.5"), src_ports=(32768, 60999)),
        ),
    ),
    (of.Multipath("reg6", 65536, basis=7),),
]


def all_flows() -> list[of.Flow]:
    flows: list[of.Flow] = []
    for i, m in enumerate(SINGLE_FIELD_MATCHES + MULTI_FIELD_MATCHES):
        flows.append(of.Flow(table=i % 10, priority=100 + i, match=m, actions=(of.Output(i + 1),)))
    for i, actions in enumerate(ACTION_LISTS):
        flows.append(of.Flow(table=1, priority=i, match=of.match(in_port=i + 1), actions=actions))
    m = of.match(reg1=5)
    flows += [
        of.Flow(table=0, priority=0),  # drop
        of.Flow(table=0, priority=1, goto_table=1),
        of.Flow(table=2, priority=65535, match=m, actions=(of.PopVlan(),), goto_table=200),
        of.Flow(table=2, priority=10, match=m, write_metadata=(0x1234, 0xFFFF)),
        of.Flow(
            table=2,
            priority=11,
            match=m,
            actions=(of.Ct(zone=2, table=3),),
            write_metadata=(1 << 63, 1 << 63),
            goto_table=3,
        ),
        of.Flow(table=254, priority=7, actions=(of.Output(of.OFPP_CONTROLLER),)),
    ]
    return flows


FLOWS = all_flows()


@pytest.mark.parametrize("flow", FLOWS, ids=[f"flow{i}" for i in range(len(FLOWS))])
def test_flow_mod_bytes_equal_os_ken(flow: of.Flow) -> None:
    encoded = ofmsg.encode_flow(flow)
    assert encoded.table == flow.table
    assert encoded.flow_mod == oracle_flow_mod(flow, encoded.cookie)
    assert len(encoded.flow_mod) % 8 == 0


def test_the_sample_covers_every_field_exact_and_masked() -> None:
    seen = {(f.name, f.mask is None) for m in SINGLE_FIELD_MATCHES for f in m.fields}
    assert seen == {(name, exact) for name in ORACLE_FIELDS for exact in (True, False)}
    assert {type(a) for actions in ACTION_LISTS for a in actions} == {
        of.Output,
        of.GroupAction,
        of.PushVlan,
        of.PopVlan,
        of.SetField,
        of.RegMove,
        of.Resubmit,
        of.Ct,
        of.Multipath,
    }


def test_tagged_vlan_match_sets_the_present_bit_in_a_basic_oxm() -> None:
    flow = of.Flow(table=0, priority=1, match=of.match(vlan_vid=of.VLAN_PRESENT | 0xABC))
    body = ofmsg.encode_flow(flow).flow_mod[48:]
    # ofp_match: type OXM, length 4 + 6; OXM_OF_VLAN_VID (class 0x8000, field 6), 0x1ABC.
    assert body[:16] == bytes.fromhex("0001000a 80000c02 1abc 000000000000".replace(" ", ""))


def test_registers_and_conntrack_use_nxm_1_headers() -> None:
    flow = of.Flow(table=0, priority=1, match=of.match(reg2=(5, 0xF), ct_state=0x21))
    body = ofmsg.encode_flow(flow).flow_mod[48:]
    reg2_masked = (1 << 16) | (2 << 9) | 0x100 | 8
    ct_state = (1 << 16) | (105 << 9) | 4
    assert struct.unpack_from("!I", body, 4)[0] == reg2_masked
    assert struct.unpack_from("!I", body, 16)[0] == ct_state


def test_a_masked_field_is_sent_with_its_value_masked() -> None:
    raw = of.Match((of.MatchField("reg0", 0xFF, 0x0F),))  # not built by match(), so not canonical
    canonical = of.match(reg0=(0x0F, 0x0F))
    assert (
        ofmsg.encode_flow(of.Flow(table=0, priority=1, match=raw)).flow_mod
        == ofmsg.encode_flow(of.Flow(table=0, priority=1, match=canonical)).flow_mod
    )


# ---- cookies ----------------------------------------------------------------------

KNOWN_FLOW = of.Flow(
    table=3,
    priority=100,
    match=of.match(vlan_vid=of.VLAN_PRESENT | 10, eth_dst=of.mac_to_int("02:00:00:00:00:01")),
    actions=(of.PopVlan(), of.Output(1)),
)


def test_cookie_of_a_known_flow_is_stable() -> None:
    # Changing this value changes every installed cookie: a resync then replaces every flow.
    assert ofmsg.encode_flow(KNOWN_FLOW).cookie == 0x0FAB_B246_7A5E_DA57


def test_equal_flows_give_equal_cookies_and_are_memoized() -> None:
    twin = of.Flow(
        table=3,
        priority=100,
        match=of.match(eth_dst=of.mac_to_int("02:00:00:00:00:01"), vlan_vid=of.VLAN_PRESENT | 10),
        actions=(of.PopVlan(), of.Output(1)),
    )
    assert twin is not KNOWN_FLOW
    assert ofmsg.encode_flow(twin) is ofmsg.encode_flow(KNOWN_FLOW)


def test_different_flows_get_different_cookies() -> None:
    variants = [
        KNOWN_FLOW,
        of.Flow(table=4, priority=100, match=KNOWN_FLOW.match, actions=KNOWN_FLOW.actions),
        of.Flow(table=3, priority=101, match=KNOWN_FLOW.match, actions=KNOWN_FLOW.actions),
        of.Flow(
            table=3, priority=100, match=KNOWN_FLOW.match, actions=(of.PopVlan(), of.Output(2))
        ),
        of.Flow(table=3, priority=100, match=KNOWN_FLOW.match, actions=(of.Output(1),)),
        of.Flow(table=3, priority=100, match=KNOWN_FLOW.match),
        of.Flow(table=3, priority=100, match=KNOWN_FLOW.match, goto_table=4),
        of.Flow(
            table=3,
            priority=100,
            match=of.match(
                vlan_vid=of.VLAN_PRESENT | 11, eth_dst=of.mac_to_int("02:00:00:00:00:01")
            ),
            actions=KNOWN_FLOW.actions,
        ),
    ]
    cookies = [ofmsg.encode_flow(f).cookie for f in variants + FLOWS]
    assert len(set(cookies)) == len(set(variants + FLOWS))
    assert all(c >> 48 == ofmsg.SERVICE_COOKIE_PREFIX for c in cookies)


# ---- deletes, groups, bundles, requests ----------------------------------------------


def os_ken_delete_by_cookie(cookie: int, cookie_mask: int) -> bytes:
    """os-ken's OFPFC_DELETE, in every table, of the flows whose cookie matches under the mask."""
    oracle = parser.OFPFlowMod(
        DP,
        cookie=cookie,
        cookie_mask=cookie_mask,
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        priority=0,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
        instructions=[],
    )
    return serialized(oracle)


def test_flow_delete_by_cookie_matches_os_ken() -> None:
    cookie = ofmsg.encode_flow(KNOWN_FLOW).cookie
    assert ofmsg.flow_delete_by_cookie(cookie) == os_ken_delete_by_cookie(
        cookie, 0xFFFFFFFFFFFFFFFF
    )


def test_delete_all_service_flows_matches_os_ken() -> None:
    assert ofmsg.delete_all_service_flows() == os_ken_delete_by_cookie(0x0FAB << 48, 0xFFFF << 48)


GROUPS = [
    of.Group(
        1,
        "all",
        (
            of.Bucket((of.Output(1),)),
            of.Bucket((of.PushVlan(), of.SetField("vlan_vid", 0x1005), of.Output(2))),
        ),
    ),
    of.Group(
        2,
        "select",
        (
            of.Bucket(
                (of.Ct(zone=4, commit=True, table=6, nat=of.Nat(of.ip_to_int("10.0.0.11"), 80)),),
                weight=30,
            ),
            of.Bucket(
                (of.Ct(zone=4, commit=True, table=6, nat=of.Nat(of.ip_to_int("10.0.0.12"), 80)),),
                weight=70,
            ),
        ),
    ),
    of.Group(0xFFFFFF00, "indirect", (of.Bucket((of.Output(7),), watch_port=7),)),
    of.Group(4, "all", ()),
]
GROUP_TYPES = {"all": ofp.OFPGT_ALL, "select": ofp.OFPGT_SELECT, "indirect": ofp.OFPGT_INDIRECT}


@pytest.mark.parametrize("group", GROUPS, ids=[f"group{g.group_id}" for g in GROUPS])
def test_group_add_matches_os_ken(group: of.Group) -> None:
    buckets = [
        parser.OFPBucket(
            weight=b.weight,
            watch_port=b.watch_port,
            watch_group=ofp.OFPG_ANY,
            actions=[oracle_action(a) for a in b.actions],
        )
        for b in group.buckets
    ]
    oracle = parser.OFPGroupMod(DP, ofp.OFPGC_ADD, GROUP_TYPES[group.type], group.group_id, buckets)
    assert ofmsg.group_add(group) == with_trailing_padding(serialized(oracle))


def with_trailing_padding(message: bytes) -> bytes:
    """os-ken appends an NX action's body unpadded and relies on whatever follows to pad
    it; nested last in the last bucket (ct(nat(dst=IP:PORT))) nothing follows, and the
    message ends short of the bucket length os-ken itself wrote. Pad as the buckets say."""
    buckets_end = 16
    while buckets_end < len(message):
        buckets_end += struct.unpack_from("!H", message, buckets_end)[0]
    padded = bytearray(message) + bytes(buckets_end - len(message))
    struct.pack_into("!H", padded, 2, len(padded))
    return bytes(padded)


def test_os_ken_padding_quirk_is_what_the_group_oracle_repairs() -> None:
    nat = of.Nat(of.ip_to_int("10.0.0.11"), 80)
    bucket = parser.OFPBucket(weight=1, actions=[oracle_action(of.Ct(zone=1, nat=nat))])
    raw = serialized(parser.OFPGroupMod(DP, ofp.OFPGC_ADD, ofp.OFPGT_SELECT, 1, [bucket]))
    assert len(raw) % 8 == 6  # short by the 2 pad bytes of the 22-byte NXAST_NAT
    assert with_trailing_padding(raw) == ofmsg.group_add(
        of.Group(1, "select", (of.Bucket((of.Ct(zone=1, nat=nat),), weight=1),))
    )


def test_group_delete_matches_os_ken() -> None:
    oracle = parser.OFPGroupMod(DP, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, 77, [])
    assert ofmsg.group_delete(77) == serialized(oracle)


def test_unknown_group_type_is_refused() -> None:
    with pytest.raises(ValueError, match="group type"):
        ofmsg.group_add(of.Group(1, "fast_failover", ()))


@pytest.mark.parametrize(
    ("build", "control_type"),
    [
        (ofmsg.bundle_open, ofp.ONF_BCT_OPEN_REQUEST),
        (ofmsg.bundle_commit, ofp.ONF_BCT_COMMIT_REQUEST),
        (ofmsg.bundle_discard, ofp.ONF_BCT_DISCARD_REQUEST),
    ],
)
def test_bundle_control_matches_os_ken(build: Any, control_type: int) -> None:
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    oracle = parser.ONFBundleCtrlMsg(DP, 0x01020304, control_type, flags, [])
    assert build(0x01020304, 0xA0B0C0D0) == serialized(oracle, xid=0xA0B0C0D0)
    assert ofmsg.parse_bundle_control(build(9, 1)) == (9, control_type)


@pytest.mark.parametrize("flow", FLOWS[::7], ids=[f"flow{i}" for i in range(0, len(FLOWS), 7)])
def test_bundle_add_matches_os_ken_and_rewrites_the_inner_xid(flow: of.Flow) -> None:
    encoded = ofmsg.encode_flow(flow)
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    inner = oracle_flow_mod_msg(flow, encoded.cookie)
    oracle = parser.ONFBundleAddMsg(DP, 77, flags, inner, [])
    wrapped = ofmsg.bundle_add(77, 0x12345678, encoded.flow_mod)
    assert wrapped == serialized(oracle, xid=0x12345678)
    assert struct.unpack_from("!I", wrapped, 24 + 4)[0] == 0x12345678
    assert struct.unpack_from("!I", encoded.flow_mod, 4)[0] == 0
    assert wrapped[24 + 8 :] == encoded.flow_mod[8:]


def test_bundle_add_of_a_group_mod_keeps_the_body() -> None:
    message = ofmsg.group_add(GROUPS[1])
    wrapped = ofmsg.bundle_add(5, 99, message)
    assert struct.unpack_from("!BBHI", wrapped) == (4, ofp.OFPT_EXPERIMENTER, 24 + len(message), 99)
    assert wrapped[24:] == ofmsg.with_xid(message, 99)


def test_bundle_adds_are_bundle_add_back_to_back_with_consecutive_xids() -> None:
    messages = [ofmsg.encode_flow(flow).flow_mod for flow in FLOWS] + [ofmsg.group_add(GROUPS[1])]
    joined = ofmsg.bundle_adds(7, 0xFFFF_FF00, messages)
    expected = b"".join(
        ofmsg.bundle_add(7, xid, message) for xid, message in enumerate(messages, 0xFFFF_FF00)
    )
    assert joined == expected
    assert ofmsg.bundle_adds(7, 1, []) == b""


def test_with_xid_rewrites_only_the_xid() -> None:
    message = ofmsg.encode_flow(KNOWN_FLOW).flow_mod
    rewritten = ofmsg.with_xid(message, 0xDEADBEEF)
    assert ofmsg.parse_header(rewritten) == (4, ofp.OFPT_FLOW_MOD, len(message), 0xDEADBEEF)
    assert rewritten[8:] == message[8:]


def test_barrier_request_matches_os_ken() -> None:
    assert ofmsg.barrier_request(31) == serialized(parser.OFPBarrierRequest(DP), xid=31)


@pytest.mark.parametrize(
    ("cookie", "mask"), [(None, None), (0, 0), (0x0FAB_0000_0000_1234, 0xFFFF_FFFF_FFFF_FFFF)]
)
def test_flow_stats_request_matches_os_ken(cookie: int | None, mask: int | None) -> None:
    if cookie is None:
        ours = ofmsg.flow_stats_request(12)
        cookie, mask = 0x0FAB << 48, 0xFFFF << 48
    else:
        assert mask is not None
        ours = ofmsg.flow_stats_request(12, cookie=cookie, cookie_mask=mask)
    oracle = parser.OFPFlowStatsRequest(
        DP, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch()
    )
    assert ours == serialized(oracle, xid=12)


def test_group_desc_request_matches_os_ken() -> None:
    oracle = parser.OFPGroupDescStatsRequest(DP, 0)
    assert ofmsg.group_desc_request(13) == serialized(oracle, xid=13)


@pytest.mark.parametrize("actions", ACTION_LISTS[:8], ids=[f"a{i}" for i in range(8)])
def test_packet_out_matches_os_ken(actions: tuple[of.Action, ...]) -> None:
    data = bytes(range(60))
    oracle = parser.OFPPacketOut(
        DP,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=of.OFPP_CONTROLLER,
        actions=[oracle_action(a) for a in actions],
        data=data,
    )
    ours = ofmsg.packet_out(in_port=of.OFPP_CONTROLLER, actions=actions, data=data, xid=5)
    assert ours == serialized(oracle, xid=5)


def test_packet_out_without_actions_is_header_then_data() -> None:
    # os-ken cannot be the oracle here: with no actions it packs the packet-out header
    # over the start of the data (and it has no OF1.3 packet-out parser).
    data = bytes(range(60))
    ours = ofmsg.packet_out(in_port=3, actions=(), data=data, xid=6)
    assert struct.unpack_from("!BBHIIIH6x", ours) == (
        4,
        ofp.OFPT_PACKET_OUT,
        24 + len(data),
        6,
        ofp.OFP_NO_BUFFER,
        3,
        0,
    )
    assert ours[24:] == data


@pytest.mark.parametrize(
    "flow",
    [
        of.Flow(table=256, priority=1),
        of.Flow(table=0, priority=70000),
        of.Flow(table=0, priority=1, actions=(of.Output(-1),)),
        of.Flow(table=0, priority=1, actions=(of.SetField("vlan_vid", 1 << 16),)),
        of.Flow(table=0, priority=1, match=of.Match((of.MatchField("reg0", 1 << 32),))),
        of.Flow(table=0, priority=1, goto_table=300),
    ],
    ids=["table", "priority", "port", "set_field", "match", "goto"],
)
def test_values_out_of_range_are_refused_as_value_errors(flow: of.Flow) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        ofmsg.encode_flow(flow)


def test_a_group_with_values_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        ofmsg.group_add(of.Group(1, "select", (of.Bucket((of.Output(1),), weight=1 << 16),)))
    with pytest.raises(ValueError, match="cannot encode"):
        ofmsg.group_add(of.Group(1 << 32, "all", ()))


def test_invalid_actions_are_refused_before_reaching_the_switch() -> None:
    with pytest.raises(TypeError, match="not an action"):
        ofmsg.encode_actions(("output:1",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        ofmsg.encode_actions((of.RegMove("reg0", "reg1", 8, src_ofs=30),))
    with pytest.raises(ValueError, match="unknown field"):
        ofmsg.encode_actions((of.SetField("ip_dscp", 1),))
    with pytest.raises(ValueError, match="needs an address"):
        ofmsg.encode_actions((of.Ct(nat=of.Nat(dst_port=80)),))


# ---- parsers ----------------------------------------------------------------------


def flow_stats_entry(table_id: int, cookie: int, flow: of.Flow) -> bytes:
    """One ofp_flow_stats: fixed part by hand, match and instructions from os-ken."""
    buf = bytearray()
    oracle_match(flow.match).serialize(buf, 0)
    inst = parser.OFPInstructionActions(
        ofp.OFPIT_APPLY_ACTIONS, [oracle_action(a) for a in flow.actions]
    )
    inst.serialize(buf, len(buf))
    length = 48 + len(buf)
    fixed = struct.pack(
        "!HBxIIHHHH4xQQQ", length, table_id, 11, 12, flow.priority, 0, 0, 0, cookie, 100, 6400
    )
    return fixed + bytes(buf)


def test_parse_flow_stats_cookies_reads_every_entry() -> None:
    entries = [(i % 7, 0x0FAB_0000_0000_0000 | i * 7919, FLOWS[i]) for i in range(0, 40, 3)]
    body = b"".join(flow_stats_entry(t, c, f) for t, c, f in entries)
    # os-ken's own parser agrees the hand-built body is well formed.
    offset, parsed = 0, []
    while offset < len(body):
        stats = parser.OFPFlowStats.parser(body, offset)
        parsed.append((stats.table_id, stats.cookie))
        offset += stats.length
    assert parsed == [(t, c) for t, c, _ in entries]
    assert ofmsg.parse_flow_stats_cookies(body) == parsed
    assert ofmsg.parse_flow_stats_cookies(b"") == []


def test_parse_flow_stats_cookies_rejects_a_corrupt_length() -> None:
    entry = bytearray(flow_stats_entry(1, 2, FLOWS[0]))
    struct.pack_into("!H", entry, 0, 0)
    with pytest.raises(ValueError, match="length"):
        ofmsg.parse_flow_stats_cookies(bytes(entry))


def test_parse_group_desc_ids_reads_every_entry() -> None:
    body = b""
    for group in GROUPS:
        buf = bytearray()
        offset = 0
        for b in group.buckets:
            bucket = parser.OFPBucket(
                b.weight, b.watch_port, ofp.OFPG_ANY, [oracle_action(a) for a in b.actions]
            )
            bucket.serialize(buf, offset)
            offset += bucket.len
        body += struct.pack("!HBxI", 8 + len(buf), GROUP_TYPES[group.type], group.group_id)
        body += bytes(buf)
    offset, parsed = 0, []
    while offset < len(body):
        desc = parser.OFPGroupDescStats.parser(body, offset)
        parsed.append(desc.group_id)
        offset += desc.length
    assert parsed == [g.group_id for g in GROUPS]
    assert ofmsg.parse_group_desc_ids(body) == parsed


def test_parse_error_of_a_standard_error() -> None:
    offending = ofmsg.with_xid(ofmsg.encode_flow(KNOWN_FLOW).flow_mod, 321)
    oracle = parser.OFPErrorMsg(
        DP, type_=ofp.OFPET_BAD_ACTION, code=ofp.OFPBAC_BAD_OUT_PORT, data=offending[:64]
    )
    message = serialized(oracle, xid=321)
    assert ofmsg.parse_error(message) == (
        ofp.OFPET_BAD_ACTION,
        ofp.OFPBAC_BAD_OUT_PORT,
        offending[:64],
    )
    assert ofmsg.parse_header(message)[3] == 321


def test_parse_error_of_an_experimenter_error() -> None:
    offending = ofmsg.bundle_commit(3, 44)
    oracle = parser.OFPErrorMsg(
        DP,
        type_=ofp.OFPET_EXPERIMENTER,
        exp_type=2316,
        experimenter=ofmsg.ONF_EXPERIMENTER_ID,
        data=offending,
    )
    assert ofmsg.parse_error(serialized(oracle, xid=44)) == (0xFFFF, 2316, offending)


def test_parse_error_refuses_other_messages() -> None:
    with pytest.raises(ValueError, match="not an OFPT_ERROR"):
        ofmsg.parse_error(ofmsg.barrier_request(1))


def test_output_to_any_is_a_plain_port_number() -> None:
    # The reserved ports are 32-bit in OpenFlow 1.3 actions, unlike the 16-bit NX ones.
    encoded = ofmsg.encode_actions((of.Output(of.OFPP_ANY),))
    assert encoded[4:8] == b"\xff\xff\xff\xff"


def test_ericsson_nd_fields_are_set_as_ovs_reads_them() -> None:
    # ovs-fields(7): ERICOXM_OF (class 0x1000) nd_reserved (1, 4 bytes) and
    # nd_options_type (2, 1 byte); a set_field action padded to 8 bytes.
    reserved = ofmsg.encode_actions((of.SetField("nd_reserved", 0x6000_0000),))
    assert reserved == bytes.fromhex("0019 0010 1000 0204 6000 0000 0000 0000")
    options = ofmsg.encode_actions((of.SetField("nd_options_type", 2),))
    assert options == bytes.fromhex("0019 0010 1000 0401 02 000000 00000000")
