"""The packet simulator itself: the OpenFlow semantics the pipeline tests rely on."""

from __future__ import annotations

import pytest

from controller.core import flows as of
from tests.support.flowsim import CtVerdict, FlowSimulator, SimulationError, fixed_state, simulate

pytestmark = pytest.mark.unit


def ports(emitted: list) -> list[int]:
    return [e.port for e in emitted]


def test_highest_priority_match_wins_and_no_match_drops() -> None:
    sim = FlowSimulator(
        [
            of.Flow(0, 10, of.match(in_port=1), actions=(of.Output(2),)),
            of.Flow(0, 20, of.match(in_port=1, eth_dst=0xAA), actions=(of.Output(3),)),
        ]
    )
    assert ports(sim.emitted({"in_port": 1, "eth_dst": 0xAA})) == [3]
    assert ports(sim.emitted({"in_port": 1, "eth_dst": 0xBB})) == [2]
    assert sim.emitted({"in_port": 9}) == []


def test_masked_match() -> None:
    multicast = 0x010000000000
    sim = FlowSimulator(
        [of.Flow(0, 10, of.match(eth_dst=(multicast, multicast)), actions=(of.Output(2),))]
    )
    assert ports(sim.emitted({"in_port": 1, "eth_dst": 0x01005E000001})) == [2]
    assert sim.emitted({"in_port": 1, "eth_dst": 0x020000000001}) == []


def test_equal_priority_overlap_is_reported() -> None:
    sim = FlowSimulator(
        [
            of.Flow(0, 10, of.match(in_port=1), actions=(of.Output(2),)),
            of.Flow(0, 10, of.match(eth_dst=5), actions=(of.Output(3),)),
        ]
    )
    with pytest.raises(SimulationError, match="ambiguous"):
        sim.emitted({"in_port": 1, "eth_dst": 5})


def test_goto_and_masked_write_metadata() -> None:
    sim = FlowSimulator(
        [
            of.Flow(0, 1, of.match(in_port=1), goto_table=2, write_metadata=(0xAB, 0xFF)),
            of.Flow(2, 1, of.match(metadata=0x12AB), actions=(of.Output(4),)),
        ]
    )
    assert ports(sim.emitted({"in_port": 1, "metadata": 0x1234})) == [4]


def test_goto_backwards_is_refused() -> None:
    sim = FlowSimulator([of.Flow(3, 1, goto_table=1)])
    with pytest.raises(SimulationError, match="forward"):
        sim.emitted({"in_port": 1}, table=3)


def test_output_to_in_port_is_suppressed_unless_in_port_action() -> None:
    sim = FlowSimulator(
        [of.Flow(0, 1, actions=(of.Output(1), of.Output(2), of.Output(of.OFPP_IN_PORT)))]
    )
    assert ports(sim.emitted({"in_port": 1})) == [2, 1]


def test_apply_actions_run_in_order_on_one_packet() -> None:
    sim = FlowSimulator(
        [
            of.Flow(
                0,
                1,
                actions=(
                    of.Output(2),
                    of.PushVlan(),
                    of.SetField("vlan_vid", of.VLAN_PRESENT | 42),
                    of.Output(3),
                    of.PopVlan(),
                    of.Output(4),
                ),
            )
        ]
    )
    out = sim.emitted({"in_port": 1})
    assert [(e.port, e.get("vlan_vid")) for e in out] == [(2, 0), (3, of.VLAN_PRESENT | 42), (4, 0)]


def test_vlan_misuse_is_an_error() -> None:
    with pytest.raises(SimulationError):
        FlowSimulator([of.Flow(0, 1, actions=(of.PopVlan(),))]).emitted({"in_port": 1})
    with pytest.raises(SimulationError):
        FlowSimulator(
            [of.Flow(0, 1, actions=(of.SetField("vlan_vid", of.VLAN_PRESENT | 5),))]
        ).emitted({"in_port": 1})


def test_reg_move_copies_bits() -> None:
    sim = FlowSimulator(
        [
            of.Flow(
                0,
                1,
                actions=(
                    of.RegMove("eth_src", "eth_dst", 48),
                    of.RegMove("reg1", "reg2", 8, src_ofs=8, dst_ofs=16),
                    of.Output(2),
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
            of.Flow(0, 1, actions=(of.Resubmit(5), of.Output(3))),
            of.Flow(5, 1, actions=(of.SetField("reg0", 7), of.Output(2))),
        ]
    )
    out = sim.emitted({"in_port": 1})
    assert [(e.port, e.get("reg0")) for e in out] == [(2, 7), (3, 7)]


def test_resubmit_loop_is_detected() -> None:
    sim = FlowSimulator([of.Flow(0, 1, actions=(of.Resubmit(0),))])
    with pytest.raises(SimulationError, match="loop"):
        sim.emitted({"in_port": 1})


def test_all_group_runs_each_bucket_on_a_copy() -> None:
    group = of.Group(
        7,
        "all",
        (
            of.Bucket((of.PushVlan(), of.SetField("vlan_vid", of.VLAN_PRESENT | 9), of.Output(2))),
            of.Bucket((of.Output(3),)),
            of.Bucket((of.Output(1),)),  # the ingress port: suppressed
        ),
    )
    sim = FlowSimulator([of.Flow(0, 1, actions=(of.GroupAction(7), of.Output(4)))], [group])
    out = sim.emitted({"in_port": 1})
    assert [(e.port, e.get("vlan_vid")) for e in out] == [(2, of.VLAN_PRESENT | 9), (3, 0), (4, 0)]


def test_select_group_lists_every_bucket_with_weight() -> None:
    group = of.Group(
        8, "select", (of.Bucket((of.Output(2),), weight=30), of.Bucket((of.Output(3),), weight=70))
    )
    out = FlowSimulator([of.Flow(0, 1, actions=(of.GroupAction(8),))], [group]).emitted(
        {"in_port": 1}
    )
    assert [(e.port, e.select_weights) for e in out] == [(2, (30,)), (3, (70,))]


def test_missing_group_is_an_error() -> None:
    with pytest.raises(SimulationError, match="no group"):
        FlowSimulator([of.Flow(0, 1, actions=(of.GroupAction(8),))]).emitted({"in_port": 1})


def _tcp(**extra: int) -> dict[str, int]:
    return {
        "in_port": 1,
        "eth_type": of.ETH_TYPE_IPV4,
        "ip_proto": of.IP_PROTO_TCP,
        "ipv4_dst": of.ip_to_int("10.0.0.100"),
        "tcp_dst": 80,
        **extra,
    }


def test_ct_recirculates_a_copy_with_state_and_nat() -> None:
    backend = of.ip_to_int("10.0.0.5")
    flows = [
        of.Flow(
            0,
            10,
            of.match(ct_state=(0, of.CT_TRACKED)),
            actions=(of.Ct(zone=3, commit=True, table=0, nat=of.Nat(backend, 8080)), of.Output(9)),
        ),
        of.Flow(
            0,
            10,
            of.match(ct_state=(of.CT_TRACKED | of.CT_NEW, of.CT_TRACKED | of.CT_NEW)),
            actions=(of.Output(2),),
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
        of.Flow(0, 10, of.match(ct_state=(0, of.CT_TRACKED)), actions=(of.Ct(zone=1, table=0),)),
        of.Flow(
            0,
            10,
            of.match(ct_state=(of.CT_TRACKED | of.CT_NEW, of.CT_TRACKED | of.CT_NEW)),
            actions=(of.Output(2),),
        ),
        of.Flow(
            0,
            10,
            of.match(
                ct_state=(of.CT_TRACKED | of.CT_ESTABLISHED, of.CT_TRACKED | of.CT_ESTABLISHED)
            ),
            actions=(of.Output(3),),
        ),
    ]
    established = fixed_state(
        of.CT_TRACKED | of.CT_ESTABLISHED, ipv4_src=of.ip_to_int("10.0.0.100")
    )
    out = FlowSimulator(flows, ct_model=established).emitted(
        _tcp(ipv4_src=of.ip_to_int("10.0.0.5"))
    )
    assert ports(out) == [3]
    assert out[0].get("ipv4_src") == of.ip_to_int("10.0.0.100")


def test_ct_model_sees_the_packet() -> None:
    seen: list[int] = []

    def model(headers, ct):  # type: ignore[no-untyped-def]
        seen.append(headers["tcp_dst"])
        return CtVerdict(of.CT_TRACKED | of.CT_NEW)

    config_flows = [
        of.Flow(0, 10, of.match(ct_state=(0, of.CT_TRACKED)), actions=(of.Ct(table=0),)),
        of.Flow(0, 10, of.match(ct_state=(of.CT_TRACKED, of.CT_TRACKED)), actions=(of.Output(2),)),
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
        flows = (of.Flow(0, 1, actions=(of.GroupAction(1),)),)
        groups = (of.Group(1, "indirect", (of.Bucket((of.Output(5),)),)),)

    assert ports(simulate(Config(), {"in_port": 1})) == [5]
