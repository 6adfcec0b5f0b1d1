"""How fast controller.core.ofmsg encodes flows, next to os-ken, in the same run.

    .venv/bin/python -m bench.encode_bench [--flows 100000] [--end-to-end]

Encodes N flows `table=3, priority=100, vlan_vid=PRESENT|V, eth_dst=MAC ->
pop_vlan, output:1` with `ofmsg.encode_flow_uncached` (what the reconciler
calls, see controller.reconcile), with `ofmsg.encode_flow` (cold cache, then
warm) and with os-ken (build an OFPFlowMod per flow and serialize it); the ratio
is the figure. The suite also encodes the flows the pipeline computes for one
host of 400 networks x 10 ports (bench.scale's snapshot: 3-5 match fields,
set-field/reg-move actions), which have no os-ken peer here.

--end-to-end (root; starts a throwaway OVS in its own network namespace) also
installs the same flows on a real switch both ways and times them to the commit
reply: ofmsg through one ONF bundle on a raw OpenFlow connection, and
`ovs-ofctl --bundle add-flows` from a file. The goal is ofmsg >= 0.5x ovs-ofctl.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

from bench.report import Figure, measured
from controller.core import ofmsg
from controller.core.flows import (
    VLAN_PRESENT,
    Flow,
    Output,
    PopVlan,
    int_to_mac,
    match,
)


def bench_flows(count: int) -> list[Flow]:
    return [
        Flow(
            table=3,
            priority=100,
            match=match(vlan_vid=VLAN_PRESENT | (i % 4094 + 1), eth_dst=0x02_00_00_00_00_00 + i),
            actions=(PopVlan(), Output(1)),
        )
        for i in range(count)
    ]


def ofctl_text(flows: list[Flow]) -> str:
    """The same flows as `bench_flows`, in `ovs-ofctl add-flows` syntax."""
    lines = []
    for flow in flows:
        fields = {f.name: f.value for f in flow.match.fields}
        lines.append(
            f"table={flow.table},priority={flow.priority},"
            f"dl_vlan={fields['vlan_vid'] & 0xFFF},"
            f"dl_dst={int_to_mac(fields['eth_dst'])},actions=pop_vlan,output:1\n"
        )
    return "".join(lines)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def encode_with_ofmsg(flows: Sequence[Flow]) -> None:
    encode = ofmsg.encode_flow
    for flow in flows:
        encode(flow)


def encode_uncached(flows: Sequence[Flow]) -> None:
    encode = ofmsg.encode_flow_uncached
    for flow in flows:
        encode(flow)


def pipeline_flows() -> tuple[Flow, ...]:
    """One host's flows of bench.scale's snapshot, 400 networks x 10 ports, 4 hosts."""
    from bench.scale import build_snapshot, view_of
    from controller.core.pipeline import compute_datapath

    snapshot = build_snapshot(400, 10, 4)
    return tuple(compute_datapath(snapshot, view_of(snapshot, 0)).flows)


def encode_with_os_ken(flows: list[Flow]) -> None:
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    class Datapath:
        ofproto = ofp
        ofproto_parser = parser

    dp = Datapath()
    for flow in flows:
        fields = {f.name: f.value for f in flow.match.fields}
        msg = parser.OFPFlowMod(
            dp,
            cookie=0,
            table_id=flow.table,
            priority=flow.priority,
            buffer_id=ofp.OFP_NO_BUFFER,
            match=parser.OFPMatch(
                vlan_vid=fields["vlan_vid"], eth_dst=int_to_mac(fields["eth_dst"])
            ),
            instructions=[
                parser.OFPInstructionActions(
                    ofp.OFPIT_APPLY_ACTIONS,
                    [parser.OFPActionPopVlan(), parser.OFPActionOutput(1, ofp.OFPCML_NO_BUFFER)],
                )
            ],
        )
        msg.serialize()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} flows/s  ({seconds * 1e6 / count:6.2f} us/flow)"


def end_to_end(flows: list[Flow]) -> None:
    from tests.support.ofclient import controller_connection
    from tests.support.ovs_instance import running_ovs, unique_name

    with running_ovs() as ovs:
        bridge = ovs.add_bridge(unique_name("ofb"))
        with controller_connection(ovs, bridge, "bench-controller.sock") as conn:
            ofmsg.encode_flow.cache_clear()
            start = time.perf_counter()
            messages = (ofmsg.encode_flow(f).flow_mod for f in flows)
            outcome, _ = conn.bundle(messages, timeout=600)
            ours = time.perf_counter() - start
            assert outcome.committed and not outcome.errors, outcome
            installed = ovs.ofctl("dump-aggregate", bridge)
            assert f"flow_count={len(flows)}" in installed, installed
            ovs.ofctl("del-flows", bridge)
        with tempfile.NamedTemporaryFile("w", suffix=".flows") as text:
            text.write(ofctl_text(flows))
            text.flush()
            mgmt = f"unix:{ovs.rundir / (bridge + '.mgmt')}"
            start = time.perf_counter()
            subprocess.run(
                ["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", mgmt, text.name],
                check=True,
            )
            ofctl = time.perf_counter() - start
        installed = ovs.ofctl("dump-aggregate", bridge)
        assert f"flow_count={len(flows)}" in installed, installed
    print(f"end to end, {len(flows)} flows in one bundle, to the commit reply:")
    print(f"  ofmsg + raw connection : {rate(len(flows), ours)}")
    print(f"  ovs-ofctl --bundle     : {rate(len(flows), ofctl)}")
    print(f"  ratio ofmsg / ovs-ofctl: {ofctl / ours:.2f}x")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--flows", type=int, default=100_000)
    args.add_argument("--end-to-end", action="store_true")
    options = args.parse_args()

    flows = bench_flows(options.flows)
    ofmsg.encode_flow.cache_clear()
    cold = timed(lambda: encode_with_ofmsg(flows))
    warm = timed(lambda: encode_with_ofmsg(flows))
    ofmsg.encode_flow.cache_clear()
    gc.disable()
    cold_no_gc = timed(lambda: encode_with_ofmsg(flows))
    gc.enable()
    os_ken = timed(lambda: encode_with_os_ken(flows))

    print(f"encoding {len(flows)} flows (table=3,vlan_vid,eth_dst -> pop_vlan,output:1):")
    uncached = timed(lambda: encode_uncached(flows))
    print(f"  ofmsg.encode_flow_uncached    : {rate(len(flows), uncached)}")
    print(f"  ofmsg.encode_flow, cold cache : {rate(len(flows), cold)}")
    print(f"  ofmsg.encode_flow, cold, no gc: {rate(len(flows), cold_no_gc)}")
    print(f"  ofmsg.encode_flow, warm cache : {rate(len(flows), warm)}")
    print(f"  os-ken OFPFlowMod + serialize : {rate(len(flows), os_ken)}")
    print(f"  ratio ofmsg (cold) / os-ken   : {os_ken / cold:.1f}x")

    if options.end_to_end:
        end_to_end(flows)


if __name__ == "__main__":
    main()


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py): encode rate, ofmsg (as the reconciler
    calls it: no cache) vs os-ken; and of the pipeline's own flows."""
    flows = bench_flows(10_000 if quick else 50_000)
    real = pipeline_flows()
    ours: list[float] = []
    peer: list[float] = []
    pipeline: list[float] = []
    for _ in range(3 if quick else 5):
        ours.append(len(flows) / timed(lambda: encode_uncached(flows)))
        peer.append(len(flows) / timed(lambda: encode_with_os_ken(flows)))
        pipeline.append(len(real) / timed(lambda: encode_uncached(real)))
    return [
        measured(
            f"encode {len(flows):,} flow-mods (as the reconciler does: no cache)", "flows/s",
            ours, peer="os-ken OFPFlowMod + serialize", peer_values=peer,
            notes="no goal of its own: the encoder's share of bulk install (flow_install)",
        ),
        measured(
            f"encode the pipeline's {len(real):,} flows of one host (400 networks x 10 ports)",
            "flows/s", pipeline,
            notes="3-5 match fields, set-field and reg-move actions; no os-ken peer",
        ),
    ]  # fmt: skip
