"""How long `POST /api/v1/diagnose` takes to answer on a lab of 8 hosts (goal: < 2 s).

    .venv/bin/python -m bench.diagnose [--quick]

Root; the diagnosis lab (tests/support/diagnose_lab.py) with 6 more hosts, each with
a VM on the VXLAN network (8 hosts, 12 VMs, 2 load balancers), and the real service
as a child process. Timed from the client: a diagnosis of each kind of pair (same
host, across the VLAN trunk, across VXLAN, through a VIP), and one naming a cause
(the VIP without healthy backend).

The peer, measured in the same run: the reads an operator makes by hand for the
VXLAN pair, one tool after the other (ovsdb-client select, ovs-ofctl dump-flows,
dpctl/dump-flows and ofproto/trace on each of the two hosts), without the
service's resolution, flow computation and verdict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import Figure, measured
from lab.hosts import Lab, SimHost
from tests.support import diagnose_lab
from tests.support.fabric import fabric_of, running_service
from tests.support.load_balancer import Servers

GOAL_S = 2.0
PAIRS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "same host": ("a1", "b1", {}),
    "VLAN": ("a1", "c1", {}),
    "VXLAN": ("x1", "x2", {}),
    "VIP": ("a1", diagnose_lab.VIP, {"proto": "tcp", "port": 80}),
    "VIP, no healthy backend": ("a1", diagnose_lab.DEAD_VIP, {"proto": "tcp", "port": 80}),
}
_SELECT = json.dumps(
    ["Open_vSwitch"]
    + [
        {"op": "select", "table": t, "where": []}
        for t in ("Bridge", "Controller", "Port", "Interface")
    ]
)


def _by_hand(hosts: list[SimHost], trace_flows: list[str]) -> None:
    for host, flow in zip(hosts, trace_flows, strict=True):
        subprocess.run(
            ["ovsdb-client", "transact", host.ovsdb_remote, _SELECT],
            check=True,
            capture_output=True,
        )
        host.dump_flows()
        host.appctl("dpctl/dump-flows", "-m")
        host.appctl("ofproto/trace", "br-int", flow)


def run(quick: bool) -> list[Figure]:
    samples = 5 if quick else 15
    workdir = Path(tempfile.mkdtemp(prefix="ofab-bench-diagnose-"))
    env = {"OVS_FABRIC_RECONCILE_INTERVAL": "3600"}
    with (
        running_service(workdir / "service", extra_env=env) as service,
        Lab() as lab,
        fabric_of(lab, service) as fabric,
        Servers() as servers,
    ):
        world = diagnose_lab.build(fabric, servers, extra_hosts=6)
        timings: dict[str, list[float]] = {name: [] for name in PAIRS}
        answers: dict[str, dict[str, Any]] = {}
        for _ in range(samples):
            for name, (src, dst, body) in PAIRS.items():
                start = time.perf_counter()
                answers[name] = fabric.client.request(
                    "POST", "/diagnose", json={"src": src, "dst": dst, **body}
                )
                timings[name].append(time.perf_counter() - start)
        vxlan = answers["VXLAN"]
        if not vxlan["reachable"]:
            raise SystemExit(f"the VXLAN pair is not reachable: {vxlan}")
        hosts = [fabric.hosts[hop["host"]] for hop in vxlan["path"]]
        flows = [_trace_text(world, hop) for hop in vxlan["path"]]
        by_hand: list[float] = []
        for _ in range(samples):
            start = time.perf_counter()
            _by_hand(hosts, flows)
            by_hand.append(time.perf_counter() - start)
    figures = []
    for name, values in timings.items():
        figures.append(
            measured(
                f"diagnose, {name} (8 hosts)", "s", values,
                peer="the same switch reads by hand, one after the other (VXLAN pair)",
                peer_values=by_hand,
                goal=f"< {GOAL_S:g} s", met=max(values) < GOAL_S,
                notes=f"answer: {_answer(answers[name])}",
            )
        )  # fmt: skip
    return figures


def _answer(found: dict[str, Any]) -> str:
    return "reachable" if found["reachable"] else str(found["cause"])


def _trace_text(world: diagnose_lab.DiagnoseLab, hop: dict[str, Any]) -> str:
    """The hop's packet in ofproto/trace syntax, as the service traced it."""
    from controller.core.diagnosis.observed import ovs_flow_text  # the same spelling

    src, dst = world.vms["x1"], world.vms["x2"]
    packet = {
        "in_port": hop["in_port"], "eth_type": 0x0800, "ip_proto": 1, "icmpv4_type": 8,
        "eth_src": int(src.mac.replace(":", ""), 16), "eth_dst": int(dst.mac.replace(":", ""), 16),
        "ipv4_src": _ip(src.ip), "ipv4_dst": _ip(dst.ip),
    }  # fmt: skip
    if hop["hop"] > 1:
        packet["tunnel_id"] = world.fabric.client.get("networks", world.fabric.network_ids["nx"])[
            "segmentation_id"
        ]
    return ovs_flow_text(packet)


def _ip(text: str | None) -> int:
    a, b, c, d = (int(part) for part in (text or "0.0.0.0").split("."))
    return a << 24 | b << 16 | c << 8 | d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for figure in run(args.quick):
        low, high = figure.spread or (figure.ours, figure.ours)
        print(
            f"{figure.metric:42s} median {figure.ours * 1000:6.0f} ms "
            f"(min {low * 1000:.0f}, max {high * 1000:.0f}, n={figure.samples})  "
            f"by hand {figure.peer_median and figure.peer_median * 1000:6.0f} ms  "
            f"ratio {figure.ratio:.2f}  goal {figure.goal}: {'met' if figure.met else 'NOT met'}"
            f"  [{figure.notes}]"
        )


if __name__ == "__main__":
    main()
