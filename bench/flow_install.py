"""Flows/s installed by the controller's own path, next to `ovs-ofctl --bundle`, same run.

    .venv/bin/python -m bench.flow_install [--flows 100000] [--rounds 3]

Root; builds a one-host lab (its own network namespace, ovsdb-server and
ovs-vswitchd, netdev datapath). The product path is exactly what a reconcile
pass does: os-ken (in this process, native threads) reached through the
service's unix-socket relay, `DatapathSync.apply()` encoding every flow,
hashing its cookie, diffing against the switch and sending one ONF bundle,
timed to the confirmed commit. The peer is `ovs-ofctl --bundle add-flows` of
the same flows from a file. The two alternate for `--rounds` rounds (the table
is emptied in between) and the medians are compared, because these machines are
shared and noisy. Also timed: a full level-triggered pass over an unchanged
table (read every flow back, diff, send nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

from api.launcher import free_tcp_port
from bench.encode_bench import bench_flows, ofctl_text, rate
from controller.core import ofmsg
from controller.openflow.app import start_openflow_controller
from controller.openflow.channel import SwitchChannel
from controller.openflow.relay import UnixToTcpRelay
from controller.reconcile import DatapathSync
from lab.hosts import Lab, SimHost


class FirstSwitch:
    """A SwitchEventSink that hands over the first switch that connects."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.channel: SwitchChannel | None = None

    def switch_connected(
        self, datapath_id: int, channel: SwitchChannel, ports: dict[str, int]
    ) -> None:
        self.channel = channel
        self.connected.set()

    def switch_disconnected(self, datapath_id: int, channel: SwitchChannel) -> None:
        pass

    def ports_changed(self, datapath_id: int, ports: dict[str, int]) -> None:
        pass

    def packet_in(self, datapath_id: int, **_: object) -> None:
        pass


def flow_count(host: object, bridge: str = "br-int") -> int:
    out = host.ofctl("dump-aggregate", bridge)  # type: ignore[attr-defined]
    return int(out.split("flow_count=")[1].split()[0])


@contextlib.contextmanager
def switch_of(lab: Lab, sink: FirstSwitch, port: int) -> Iterator[tuple[SimHost, DatapathSync]]:
    """Host "b1" of `lab` with a netdev bridge br-int whose switch connects (through a
    unix-socket relay) to the OpenFlow controller on 127.0.0.1:`port`, which hands it to
    `sink`; yields the host and a DatapathSync of that switch, and closes the relay after."""
    host = lab.add_host("b1", tunnel_ip=None, uplink=False)
    host.vsctl(
        "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
        "protocols=OpenFlow13", "fail_mode=secure",
    )  # fmt: skip
    relay = UnixToTcpRelay(host.rundir / "ofp.sock", ("127.0.0.1", port))
    relay.start()
    try:
        host.vsctl("set-controller", "br-int", f"unix:{host.rundir / 'ofp.sock'}")
        if not sink.connected.wait(20) or sink.channel is None:
            raise SystemExit("the switch never connected")
        yield host, DatapathSync(sink.channel, timeout=600)
    finally:
        relay.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    flows = bench_flows(args.flows)

    sink = FirstSwitch()
    port = free_tcp_port()
    start_openflow_controller(sink, host="127.0.0.1", port=port)
    with Lab() as lab, switch_of(lab, sink, port) as (host, sync):
        ours: list[float] = []
        peer: list[float] = []
        noop: list[float] = []
        with tempfile.NamedTemporaryFile("w", suffix=".flows") as text:
            text.write(ofctl_text(flows))
            text.flush()
            for _ in range(args.rounds):
                ofmsg.encode_flow.cache_clear()  # a cold cache: every flow is encoded
                sync.read_actual()
                start = time.perf_counter()
                result = sync.apply(flows, [])
                ours.append(time.perf_counter() - start)
                assert result.flows_added == len(flows) and not result.rejected, result
                assert flow_count(host) == len(flows)

                start = time.perf_counter()
                sync.read_actual()
                assert not sync.apply(flows, []).changed
                noop.append(time.perf_counter() - start)

                host.ofctl("del-flows", "br-int")
                start = time.perf_counter()
                subprocess.run(
                    ["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows",
                     host.mgmt_target("br-int"), text.name],
                    check=True,
                )  # fmt: skip
                peer.append(time.perf_counter() - start)
                assert flow_count(host) == len(flows)
                host.ofctl("del-flows", "br-int")
    ours_s, peer_s, noop_s = map(statistics.median, (ours, peer, noop))
    print(f"{len(flows):,} flows into one bridge, median of {args.rounds} alternating rounds:")
    print(f"  ovs-fabric (os-ken, DatapathSync, one bundle): {rate(len(flows), ours_s)}")
    print(f"  ovs-ofctl --bundle add-flows                 : {rate(len(flows), peer_s)}")
    print(f"  ratio ovs-fabric / ovs-ofctl                 : {peer_s / ours_s:.2f}x (goal >= 0.5x)")
    print(f"  unchanged table, full read-back + diff       : {noop_s:.2f} s")
    rounded = [round(x, 2) for x in ours], [round(x, 2) for x in peer]
    print(f"  rounds (ours / ofctl, s): {rounded[0]} / {rounded[1]}")


if __name__ == "__main__":
    main()
