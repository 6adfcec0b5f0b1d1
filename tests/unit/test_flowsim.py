"""The packet simulator itself: the OpenFlow semantics the pipeline tests rely on."""

from __future__ import annotations

import pytest

from controller.core.flows import (
    CT_ESTABLISHED,
    CT_NEW,
    CT_TRACKED,
    ETH_TYPE_IPV4,
    IP_PROTO_TCP,
    OFPP_IN_PORT,
    VLAN_PRESENT,
    Bucket,
    Ct,
    Flow,
    Group,
    GroupAction,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    RegMove,
    Resubmit,
    SetField,
    ip_to_int,
    match,
)
from tests.support.flowsim import CtVerdict, FlowSimulator, SimulationError, fixed_state, simulate

pytestmark = pytest.mark.unit


def ports(emitted: list) -> list[int]:
    return [e.port for e in emitted]


def test_highest_priority_match_wins_and_no_match_drops() -> None:
    sim = FlowSimulator(
        [
            Flow(0, 10, match(in_port=1), actions=(Output(2),)),
            Flow(0, 20, match(in_port=1, eth_dst=0xAA), actions=(Output(3),)),
        ]
    )
    assert ports(sim.emitted({"in_port": 1, "eth_dst": 0xAA})) == [3]
    assert ports(sim.emitted({"in_port": 1, "eth_dst": 0xBB})) == [2]
    assert sim.emitted({"in_port": 9}) == []


def test_masked_match() -> None:
    multicast = 0x010000000000
    sim = FlowSimulator([Flow(0, 10, match(eth_dst=(multicast, multicast)), actions=(Output(2),))])
    assert ports(sim.emitted({"in_port": 1, "eth_dst": 0x01005E000001})) == [2]
    assert sim.emitted({"in_port": 1, "eth_dst": 0x020000000001}) == []


def test_equal_priority_overlap_is_reported() -> None:
    sim = FlowSimulator(
        [
            Flow(0, 10, match(in_port=1), actions=(Output(2),)),
            Flow(0, 10, match(eth_dst=5), actions=(Output(3),)),
        ]
    )
    with pytest.raises(SimulationError, match="ambiguous"):
        sim.emitted({"in_port": 1, "eth_dst": 5})


def test_goto_and_masked_write_metadata() -> None:
    sim = FlowSimulator(
        [
            Flow(0, 1, match(in_port=1), goto_table=2, write_metadata=(0xAB, 0xFF)),
            Flow(2, 1, match(metadata=0x12AB), actions=(Output(4),)),
        ]
    )
    assert ports(sim.emitted({"in_port": 1, "metadata": 0x1234})) == [4]


def test_goto_backwards_is_refused() -> None:
    sim = FlowSimulator([Flow(3, 1, goto_table=1)])
    with pytest.raises(SimulationError, match="forward"):
        sim.emitted({"in_port": 1}, table=3)


def test_output_to_in_port_is_suppressed_unless_in_port_action() -> None:
    sim = FlowSimulator([Flow(0, 1, actions=(Output(1), Output(2), Output(OFPP_IN_PORT)))])
    assert ports(sim.emitted({"in_port": 1})) == [2, 1]


def test_apply_actions_run_in_order_on_one_packet() -> None:
    sim = FlowSimulator(
        [
            Flow(
                0,
                1,
                actions=(
                    Output(2),
                    PushVlan(),
                    SetField("vlan_vid", VLAN_PRESENT | 42),
                    Output(3),
                    PopVlan(),
                    Output(4),
                ),
            )
        ]
    )
    out = sim.emitted({"in_port": 1})
    assert [(e.port, e.get("vlan_vid")) for e in out] == [(2, 0), (3, VLAN_PRESENT | 42), (4, 0)]


def test_vlan_misuse_is_an_error() -> None:
    with pytest.raises(SimulationError):
        FlowSimulator([Flow(0, 1, actions=(PopVlan(),))]).emitted({"in_port": 1})
    with pytest.raises(SimulationError):
        FlowSimulator([Flow(0, 1, actions=(SetField("vlan_vid", VLAN_PRESENT | 5),))]).emitted(
            {"in_port": 1}
        )


def test_reg_move_copies_bits() -> None:
    sim = FlowSimulator(
        [
            Flow(
                0,
                1,
                actions=(
                    RegMove("eth_src", "eth_dst", 48),
                    RegMove("reg1", "reg2", 8, src_ofs=8, dst_ofs=16),
                    Output(2),
                ),
            )
        ]
    )
    (out,) = sim.emitted(
        {"in_port": 1, "eth_src": 0xA, "eth_dst": 0xB, "reg1": 0xCD00, "reg2": 0xF}
    )
    assert out.get("eth_dst") == 0xA
    assert out.get("reg2") == 0xCD000F


def test_resubmit_comes_back_with_changes() -> None:
    sim = FlowSimulator(
        [
            Flow(0, 1, actions=(Resubmit(5), Output(3))),
            Flow(5, 1, actions=(SetField("reg0", 7), Output(2))),
        ]
    )
    out = sim.emitted({"in_port": 1})
    assert [(e.port, e.get("reg0")) for e in out] == [(2, 7), (3, 7)]


def test_resubmit_loop_is_detected() -> None:
    sim = FlowSimulator([Flow(0, 1, actions=(Resubmit(0),))])
    with pytest.raises(SimulationError, match="loop"):
        sim.emitted({"in_port": 1})


def test_all_group_runs_each_bucket_on_a_copy() -> None:
    group = Group(
        7,
        "all",
        (
            Bucket((PushVlan(), SetField("vlan_vid", VLAN_PRESENT | 9), Output(2))),
            Bucket((Output(3),)),
            Bucket((Output(1),)),  # the ingress port: suppressed
        ),
    )
    sim = FlowSimulator([Flow(0, 1, actions=(GroupAction(7), Output(4)))], [group])
    out = sim.emitted({"in_port": 1})
    assert [(e.port, e.get("vlan_vid")) for e in out] == [(2, VLAN_PRESENT | 9), (3, 0), (4, 0)]


def test_select_group_lists_every_bucket_with_weight() -> None:
    group = Group(8, "select", (Bucket((Output(2),), weight=30), Bucket((Output(3),), weight=70)))
    out = FlowSimulator([Flow(0, 1, actions=(GroupAction(8),))], [group]).emitted({"in_port": 1})
    assert [(e.port, e.select_weights) for e in out] == [(2, (30,)), (3, (70,))]


def test_missing_group_is_an_error() -> None:
    with pytest.raises(SimulationError, match="no group"):
        FlowSimulator([Flow(0, 1, actions=(GroupAction(8),))]).emitted({"in_port": 1})


def _tcp(**extra: int) -> dict[str, int]:
    return {
        "in_port": 1,
        "eth_type": ETH_TYPE_IPV4,
        "ip_proto": IP_PROTO_TCP,
        "ipv4_dst": ip_to_int("10.0.0.100"),
        "tcp_dst": 80,
        **extra,
    }


def test_ct_recirculates_a_copy_with_state_and_nat() -> None:
    backend = ip_to_int("10.0.0.5")
    flows = [
        Flow(
            0,
            10,
            match(ct_state=(0, CT_TRACKED)),
            actions=(Ct(zone=3, commit=True, table=0, nat=Nat(backend, 8080)), Output(9)),
        ),
        Flow(
            0, 10, match(ct_state=(CT_TRACKED | CT_NEW, CT_TRACKED | CT_NEW)), actions=(Output(2),)
        ),
    ]
    run = FlowSimulator(flows).run(_tcp())
    by_port = {e.port: e for e in run.emitted}
    # The original continues untracked and untranslated; the copy comes back translated.
    assert by_port[9].get("ct_state") == 0 and by_port[9].get("tcp_dst") == 80
    assert by_port[2].get("ipv4_dst") == backend and by_port[2].get("tcp_dst") == 8080
    assert by_port[2].get("ct_zone") == 3
    assert [c.ct.zone for c in run.ct_calls] == [3]


def test_ct_state_comes_from_the_test_model() -> None:
    flows = [
        Flow(0, 10, match(ct_state=(0, CT_TRACKED)), actions=(Ct(zone=1, table=0),)),
        Flow(
            0, 10, match(ct_state=(CT_TRACKED | CT_NEW, CT_TRACKED | CT_NEW)), actions=(Output(2),)
        ),
        Flow(
            0,
            10,
            match(ct_state=(CT_TRACKED | CT_ESTABLISHED, CT_TRACKED | CT_ESTABLISHED)),
            actions=(Output(3),),
        ),
    ]
    established = fixed_state(CT_TRACKED | CT_ESTABLISHED, ipv4_src=ip_to_int("10.0.0.100"))
    out = FlowSimulator(flows, ct_model=established).emitted(_tcp(ipv4_src=ip_to_int("10.0.0.5")))
    assert ports(out) == [3]
    assert out[0].get("ipv4_src") == ip_to_int("10.0.0.100")


def test_ct_model_sees_the_packet() -> None:
    seen: list[int] = []

    def model(headers, ct):  # type: ignore[no-untyped-def]
        seen.append(headers["tcp_dst"])
        return CtVerdict(CT_TRACKED | CT_NEW)

    config_flows = [
        Flow(0, 10, match(ct_state=(0, CT_TRACKED)), actions=(Ct(table=0),)),
        Flow(0, 10, match(ct_state=(CT_TRACKED, CT_TRACKED)), actions=(Output(2),)),
    ]
    assert ports(FlowSimulator(config_flows, ct_model=model).emitted(_tcp())) == [2]
    assert seen == [80]


def test_unknown_or_oversized_fields_are_rejected() -> None:
    sim = FlowSimulator([])
    with pytest.raises(SimulationError, match="unknown field"):
        sim.emitted({"in_port": 1, "eth_dest": 5})
    with pytest.raises(SimulationError, match="bits"):
        sim.emitted({"in_port": 1, "vlan_vid": 1 << 13})
    with pytest.raises(SimulationError, match="in_port"):
        sim.emitted({"eth_dst": 5})


def test_simulate_accepts_anything_with_flows_and_groups() -> None:
    class Config:
        flows = (Flow(0, 1, actions=(GroupAction(1),)),)
        groups = (Group(1, "indirect", (Bucket((Output(5),)),)),)

    assert ports(simulate(Config(), {"in_port": 1})) == [5]
