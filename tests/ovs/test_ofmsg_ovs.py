"""controller.core.ofmsg bytes on a real Open vSwitch 3.1.

The unit tests prove the bytes equal os-ken's; these prove OVS accepts them and
reads them as meant: each flow is checked against what `ovs-ofctl dump-flows`
says the switch installed, under the cookie we computed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from controller.core import flows as of
from controller.core import ofmsg
from controller.core.pipeline.nd_responder import nd_advert_actions
from tests.support.ofclient import OpenFlowConnection, controller_connection
from tests.support.ovs_instance import OvsInstance, running_ovs, unique_name

pytestmark = pytest.mark.ovs

MAC = of.mac_to_int
IP = of.ip_to_int

# Each flow with the text ovs-ofctl (OVS 3.1) prints for it after "priority=".
FLOWS_AS_OVS_SHOWS_THEM: list[tuple[of.Flow, str]] = [
    (
        of.Flow(
            0,
            100,
            of.match(in_port=1, vlan_vid=of.VLAN_PRESENT | 10, eth_dst=MAC("02:00:00:00:00:01")),
            (of.PopVlan(), of.Output(2)),
        ),
        "priority=100,in_port=1,dl_vlan=10,dl_dst=02:00:00:00:00:01 actions=pop_vlan,output:2",
    ),
    (
        of.Flow(
            0,
            101,
            of.match(in_port=2, vlan_vid=0),
            (of.PushVlan(), of.SetField("vlan_vid", of.VLAN_PRESENT | 20), of.Output(1)),
        ),
        "priority=101,in_port=2,vlan_tci=0x0000/0x1fff"
        " actions=push_vlan:0x8100,set_field:4116->vlan_vid,output:1",
    ),
    (
        of.Flow(
            0,
            102,
            of.match(vlan_vid=(of.VLAN_PRESENT, of.VLAN_PRESENT)),
            goto_table=1,
            write_metadata=(0x42, 0xFF),
        ),
        "priority=102,vlan_tci=0x1000/0x1000 actions=write_metadata:0x42/0xff,goto_table:1",
    ),
    (
        of.Flow(
            0,
            103,
            of.match(
                eth_src=(MAC("02:00:00:00:00:00"), MAC("ff:ff:ff:00:00:00")),
                eth_dst=(of.MULTICAST_BIT, of.MULTICAST_BIT),
            ),
            (of.Output(of.OFPP_CONTROLLER, max_len=128),),
        ),
        "priority=103,dl_src=02:00:00:00:00:00/ff:ff:ff:00:00:00,"
        "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=CONTROLLER:128",
    ),
    (
        of.Flow(
            1,
            10,
            of.match(
                metadata=(0x42, 0xFF),
                eth_type=of.ETH_TYPE_ARP,
                arp_op=of.ARP_REQUEST,
                arp_spa=IP("10.0.0.1"),
                arp_tpa=(IP("10.0.0.0"), IP("255.255.255.0")),
                arp_sha=MAC("02:00:00:00:00:01"),
                arp_tha=0,
            ),
            (of.Output(of.OFPP_IN_PORT),),
        ),
        "priority=10,arp,metadata=0x42/0xff,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/24,arp_op=1,"
        "arp_sha=02:00:00:00:00:01,arp_tha=00:00:00:00:00:00 actions=IN_PORT",
    ),
    (
        of.Flow(
            1,
            11,
            of.match(
                eth_type=of.ETH_TYPE_IPV4,
                ipv4_src=(IP("10.1.0.0"), IP("255.255.0.0")),
                ipv4_dst=IP("10.2.0.5"),
                ip_proto=of.IP_PROTO_UDP,
                udp_src=68,
                udp_dst=67,
            ),
            (
                of.SetField("eth_dst", MAC("02:00:00:00:00:09")),
                of.SetField("ipv4_dst", IP("10.2.0.6")),
                of.Output(3),
            ),
        ),
        "priority=11,udp,nw_src=10.1.0.0/16,nw_dst=10.2.0.5,tp_src=68,tp_dst=67"
        " actions=set_field:02:00:00:00:00:09->eth_dst,set_field:10.2.0.6->ip_dst,output:3",
    ),
    (
        of.Flow(
            1,
            12,
            of.match(
                eth_type=of.ETH_TYPE_IPV4, ip_proto=of.IP_PROTO_ICMP, icmpv4_type=8, icmpv4_code=0
            ),
            (of.SetField("reg3", 77), of.Resubmit(2)),
        ),
        "priority=12,icmp,icmp_type=8,icmp_code=0 actions=set_field:0x4d->reg3,resubmit(,2)",
    ),
    (
        of.Flow(
            1,
            13,
            of.match(
                eth_type=of.ETH_TYPE_IPV4,
                ip_proto=of.IP_PROTO_TCP,
                tcp_src=(0x400, 0xFC00),
                tcp_dst=443,
                tcp_flags=(0x002, 0x012),
            ),
            (of.Ct(zone=9, table=2),),
        ),
        "priority=13,tcp,tp_src=0x400/0xfc00,tp_dst=443,tcp_flags=+syn-ack"
        " actions=ct(table=2,zone=9)",
    ),
    (
        of.Flow(
            2,
            14,
            of.match(
                ct_state=(of.CT_TRACKED | of.CT_NEW, of.CT_TRACKED | of.CT_NEW),
                ct_zone=9,
                ct_mark=(1, 0xF),
                eth_type=of.ETH_TYPE_IPV4,
            ),
            (of.Ct(zone=9, commit=True, table=3, nat=of.Nat(IP("10.0.0.5"), 8080)),),
        ),
        "priority=14,ct_state=+new+trk,ct_zone=9,ct_mark=0x1/0xf,ip"
        " actions=ct(commit,table=3,zone=9,nat(dst=10.0.0.5:8080))",
    ),
    (
        of.Flow(
            2,
            15,
            of.match(
                ct_state=(of.CT_TRACKED | of.CT_ESTABLISHED, of.CT_TRACKED | of.CT_ESTABLISHED),
                eth_type=of.ETH_TYPE_IPV4,
            ),
            (of.Ct(zone=9, table=3, nat=of.Nat()),),
        ),
        "priority=15,ct_state=+est+trk,ip actions=ct(table=3,zone=9,nat)",
    ),
    (
        of.Flow(
            2, 16, of.match(ct_state=(of.CT_TRACKED | of.CT_INVALID, of.CT_TRACKED | of.CT_INVALID))
        ),
        "priority=16,ct_state=+inv+trk actions=drop",
    ),
    (
        of.Flow(
            3,
            17,
            of.match(
                tunnel_id=5000,
                reg0=1,
                reg1=(2, 0xFF),
                reg2=3,
                reg3=4,
                reg4=5,
                reg5=6,
                reg6=7,
                reg7=(0x8080, 0xF0F0),
            ),
            (
                of.RegMove("reg0", "reg1", 16, src_ofs=0, dst_ofs=8),
                of.RegMove("eth_src", "eth_dst", 48),
                of.RegMove("in_port", "reg2", 16),
                of.SetField("tunnel_id", 77),
                of.Output(4),
            ),
        ),
        "priority=17,reg0=0x1,reg1=0x2/0xff,reg2=0x3,reg3=0x4,reg4=0x5,reg5=0x6,reg6=0x7,"
        "reg7=0x8080/0xf0f0,tun_id=0x1388 actions=move:NXM_NX_REG0[0..15]->NXM_NX_REG1[8..23],"
        "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],move:OXM_OF_IN_PORT[0..15]->NXM_NX_REG2[0..15],"
        "set_field:0x4d->tun_id,output:4",
    ),
    (
        of.Flow(3, 18, of.match(in_port=5), (of.GroupAction(7),)),
        "priority=18,in_port=5 actions=group:7",
    ),
    (
        of.Flow(
            3,
            20,
            of.match(
                eth_type=of.ETH_TYPE_IPV4,
                ipv4_dst=IP("10.0.0.100"),
                ip_proto=of.IP_PROTO_TCP,
                tcp_dst=80,
            ),
            (
                of.Ct(zone=1, commit=True, nat=of.Nat(IP("10.0.0.7"))),
                of.SetField("ipv4_src", IP("1.2.3.4")),
                of.SetField("tcp_dst", 81),
                of.Output(1),
            ),
        ),
        "priority=20,tcp,nw_dst=10.0.0.100,tp_dst=80 actions=ct(commit,zone=1,nat(dst=10.0.0.7)),"
        "set_field:1.2.3.4->ip_src,set_field:81->tcp_dst,output:1",
    ),
    (
        of.Flow(
            4,
            32,
            of.match(eth_type=of.ETH_TYPE_IPV4, ip_proto=of.IP_PROTO_UDP, udp_dst=53),
            (of.SetField("reg7", 1), of.Multipath("reg6", 4), of.Resubmit(4)),
        ),
        "priority=32,udp,tp_dst=53 actions=set_field:0x1->reg7,"
        "multipath(symmetric_l3l4+udp,0,modulo_n,4,0,NXM_NX_REG6[0..15]),resubmit(,4)",
    ),
    # The IPv6 Neighbor Advertisement built from a Solicitation (nd_responder), in its
    # two steps: OVS refuses writing nd_tll unless the match says NA.
    (
        of.Flow(
            2,
            30,
            of.match(
                eth_type=of.ETH_TYPE_IPV6,
                ip_proto=of.IP_PROTO_ICMPV6,
                icmpv6_type=of.ICMPV6_NEIGHBOR_SOLICITATION,
                ipv6_nd_target=of.ipv6_to_int("fd00::2"),
            ),
            nd_advert_actions(MAC("02:00:00:00:00:02"), of.ipv6_to_int("fd00::2")),
        ),
        "priority=30,icmp6,icmp_type=135,nd_target=fd00::2"
        " actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:02->eth_src,"
        "move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fd00::2->ipv6_src,"
        "set_field:136->icmpv6_type,set_field:1610612736->nd_reserved,"
        "set_field:2->nd_options_type,resubmit(,9)",
    ),
    (
        of.Flow(
            9,
            31,
            of.match(
                eth_type=of.ETH_TYPE_IPV6,
                ip_proto=of.IP_PROTO_ICMPV6,
                icmpv6_type=of.ICMPV6_NEIGHBOR_ADVERTISEMENT,
                ipv6_nd_tll=0,
            ),
            (of.RegMove("eth_src", "ipv6_nd_tll", 48), of.Output(of.OFPP_IN_PORT)),
        ),
        "priority=31,icmp6,icmp_type=136,nd_tll=00:00:00:00:00:00"
        " actions=move:NXM_OF_ETH_SRC[]->NXM_NX_ND_TLL[],IN_PORT",
    ),
]

GROUPS_AS_OVS_SHOWS_THEM: list[tuple[of.Group, str]] = [
    (
        of.Group(
            7,
            "select",
            (
                of.Bucket(
                    (of.Ct(zone=5, commit=True, table=2, nat=of.Nat(IP("10.0.0.11"), 8080)),),
                    weight=30,
                ),
                of.Bucket(
                    (of.Ct(zone=5, commit=True, table=2, nat=of.Nat(IP("10.0.0.12"), 8080)),),
                    weight=70,
                ),
            ),
        ),
        "group_id=7,type=select,bucket=weight:30,actions=ct(commit,table=2,zone=5,"
        "nat(dst=10.0.0.11:8080)),bucket=weight:70,actions=ct(commit,table=2,zone=5,"
        "nat(dst=10.0.0.12:8080))",
    ),
    (
        of.Group(
            8,
            "all",
            (
                of.Bucket((of.Output(1),)),
                of.Bucket(
                    (of.PushVlan(), of.SetField("vlan_vid", of.VLAN_PRESENT | 5), of.Output(2))
                ),
            ),
        ),
        "group_id=8,type=all,bucket=actions=output:1,"
        "bucket=actions=push_vlan:0x8100,set_field:4101->vlan_vid,output:2",
    ),
    (
        of.Group(9, "indirect", (of.Bucket((of.Output(3),)),)),
        "group_id=9,type=indirect,bucket=actions=output:3",
    ),
]

FLOWS = [flow for flow, _ in FLOWS_AS_OVS_SHOWS_THEM]
GROUPS = [group for group, _ in GROUPS_AS_OVS_SHOWS_THEM]
FOREIGN_COOKIE = 0x1234  # a flow someone else installed: not ours to touch

_FLOW_LINE = re.compile(
    r"cookie=(0x[0-9a-f]+), duration=[^,]+, table=(\d+), n_packets=\d+, n_bytes=\d+, (.*)$"
)


class Switch:
    """One netdev bridge of a throwaway OVS, seen through ovs-ofctl (not our code)."""

    def __init__(self, ovs: OvsInstance, bridge: str) -> None:
        self.ovs = ovs
        self.bridge = bridge

    def ofctl(self, command: str, *args: str) -> str:
        return self.ovs.ofctl(command, self.bridge, *args)


@pytest.fixture(scope="module")
def switch() -> Iterator[Switch]:
    with running_ovs() as ovs:
        yield Switch(ovs, ovs.add_bridge(unique_name("ofm")))


@pytest.fixture(scope="module")
def connection(switch: Switch) -> Iterator[OpenFlowConnection]:
    with controller_connection(switch.ovs, switch.bridge, "ofmsg-controller.sock") as conn:
        yield conn


@pytest.fixture(autouse=True)
def empty_tables(switch: Switch) -> None:
    switch.ofctl("del-flows")
    switch.ofctl("del-groups")


def installed_flows(switch: Switch) -> dict[int, tuple[int, str]]:
    """cookie -> (table, "priority=...,match actions=...") of every flow on the bridge."""
    flows = {}
    for line in switch.ofctl("dump-flows").splitlines()[1:]:
        found = _FLOW_LINE.search(line)
        assert found, f"unexpected dump-flows line {line!r}"
        flows[int(found[1], 16)] = (int(found[2]), found[3])
    return flows


def installed_groups(switch: Switch) -> dict[int, str]:
    groups = {}
    for line in switch.ofctl("dump-groups").splitlines()[1:]:
        text = line.strip()
        groups[int(text.split(",", 1)[0].removeprefix("group_id="))] = text
    return groups


def install_everything(connection: OpenFlowConnection) -> None:
    messages = [ofmsg.group_add(g) for g in GROUPS]
    messages += [ofmsg.encode_flow(f).flow_mod for f in FLOWS]
    outcome, _ = connection.bundle(messages)
    assert outcome.errors == {}
    assert outcome.committed


def test_a_bundle_installs_exactly_the_encoded_flows_and_groups(
    switch: Switch, connection: OpenFlowConnection
) -> None:
    install_everything(connection)
    expected = {
        ofmsg.encode_flow(flow).cookie: (flow.table, text) for flow, text in FLOWS_AS_OVS_SHOWS_THEM
    }
    assert installed_flows(switch) == expected
    assert installed_groups(switch) == {g.group_id: text for g, text in GROUPS_AS_OVS_SHOWS_THEM}


def test_flow_delete_by_cookie_removes_exactly_that_flow(
    switch: Switch, connection: OpenFlowConnection
) -> None:
    install_everything(connection)
    victim = ofmsg.encode_flow(FLOWS[3]).cookie
    errors = connection.send_with_barrier([ofmsg.flow_delete_by_cookie(victim)])
    assert errors == {}
    remaining = {ofmsg.encode_flow(f).cookie for f in FLOWS} - {victim}
    assert set(installed_flows(switch)) == remaining


def test_flow_stats_reply_parses_to_our_cookies_only(
    switch: Switch, connection: OpenFlowConnection
) -> None:
    install_everything(connection)
    switch.ofctl("add-flow", f"cookie={FOREIGN_COOKIE:#x},table=5,priority=1,actions=drop")
    ours = sorted((f.table, ofmsg.encode_flow(f).cookie) for f in FLOWS)

    body = connection.multipart(ofmsg.flow_stats_request(0))
    assert sorted(ofmsg.parse_flow_stats_cookies(body)) == ours

    everything = connection.multipart(ofmsg.flow_stats_request(0, cookie=0, cookie_mask=0))
    assert sorted(ofmsg.parse_flow_stats_cookies(everything)) == sorted(
        [*ours, (5, FOREIGN_COOKIE)]
    )

    groups = connection.multipart(ofmsg.group_desc_request(0))
    assert sorted(ofmsg.parse_group_desc_ids(groups)) == [7, 8, 9]


def test_delete_all_service_flows_spares_foreign_cookies_and_groups_go_by_id(
    switch: Switch, connection: OpenFlowConnection
) -> None:
    install_everything(connection)
    switch.ofctl("add-flow", f"cookie={FOREIGN_COOKIE:#x},table=5,priority=1,actions=drop")
    errors = connection.send_with_barrier([ofmsg.delete_all_service_flows(), ofmsg.group_delete(8)])
    assert errors == {}
    assert set(installed_flows(switch)) == {FOREIGN_COOKIE}
    assert set(installed_groups(switch)) == {7, 9}


def test_a_failing_flow_fails_the_commit_and_is_named_by_its_add_xid(
    switch: Switch, connection: OpenFlowConnection
) -> None:
    good = of.Flow(4, 1, of.match(in_port=9), (of.Output(1),))
    to_missing_group = of.Flow(
        4, 2, of.match(in_port=3), (of.GroupAction(99),)
    )  # checked at commit
    messages = [ofmsg.encode_flow(f).flow_mod for f in (good, to_missing_group, FLOWS[0])]

    outcome, add_xids = connection.bundle(messages, bundle_id=0xB00)

    assert not outcome.committed
    assert outcome.errors.pop(add_xids[1]) == (2, 9)  # OFPET_BAD_ACTION, OFPBAC_BAD_OUT_GROUP
    # The commit itself: experimenter error ONF OFPBFC_MSG_FAILED (2300 + 13).
    assert list(outcome.errors.values()) == [(0xFFFF, 2313)]
    assert installed_flows(switch) == {}  # atomic: the good flows are not in either


def test_a_flow_rejected_on_add_is_named_by_its_add_xid_while_the_rest_commits(
    switch: Switch, connection: OpenFlowConnection
) -> None:
    # OVS checks prerequisites as each message is added, not at commit: the commit of
    # the others still succeeds. Whoever sends bundles must look at the add errors too.
    good = of.Flow(4, 1, of.match(in_port=9), (of.Output(1),))
    no_prerequisite = of.Flow(4, 2, of.match(tcp_dst=80), (of.Output(1),))
    messages = [ofmsg.encode_flow(f).flow_mod for f in (good, no_prerequisite)]

    outcome, add_xids = connection.bundle(messages, bundle_id=0xB01)

    assert outcome.committed
    assert outcome.errors == {add_xids[1]: (4, 9)}  # OFPET_BAD_MATCH, OFPBMC_BAD_PREREQ
    assert set(installed_flows(switch)) == {ofmsg.encode_flow(good).cookie}


def test_a_discarded_bundle_installs_nothing(
    switch: Switch, connection: OpenFlowConnection
) -> None:
    open_xid, add_xid, discard_xid = connection.xid(), connection.xid(), connection.xid()
    connection.send(
        ofmsg.bundle_open(5, open_xid)
        + ofmsg.bundle_add(5, add_xid, ofmsg.encode_flow(FLOWS[0]).flow_mod)
        + ofmsg.bundle_discard(5, discard_xid)
    )
    assert ofmsg.parse_bundle_control(connection.wait_for(open_xid)) == (
        5,
        ofmsg.ONF_BCT_OPEN_REPLY,
    )
    assert ofmsg.parse_bundle_control(connection.wait_for(discard_xid)) == (
        5,
        ofmsg.ONF_BCT_DISCARD_REPLY,
    )
    assert installed_flows(switch) == {}


def test_packet_out_is_accepted(connection: OpenFlowConnection) -> None:
    frame = bytes.fromhex("ffffffffffff0200000000010806") + bytes(46)
    message = ofmsg.packet_out(
        in_port=of.OFPP_CONTROLLER, actions=(of.Output(0xFFFFFFFE),), data=frame
    )
    assert connection.send_with_barrier([message]) == {}
