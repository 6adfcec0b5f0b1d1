"""How the pipeline scales: a full compute for one host, and the incremental compute
after one port changes, in the same run (no root, no switch).

    .venv/bin/python -m bench.scale --networks 4000 --ports-per-network 10 --hosts 4

The synthetic snapshot: N networks (every 20th a VXLAN, the rest VLANs), P ports
each with one IPv4 address, spread round-robin over H hosts (every host has a VLAN
uplink and a tunnel to every other host), and a TCP load balancer with three
backends in every 50th network. The measured host is host 0.

Figures, each the median of --repeats runs:
- full: `compute_datapath` of the snapshot (cold: no cache);
- incremental: one port of host 0 gets a second IP address (a new snapshot sharing
  every other object with the previous one, as an incremental loader gives it);
  `DatapathComputer.compute` of the new snapshot with the previous one cached;
- peer: the full compute of that changed snapshot;
- also: the same change on host 1 (it has ports in that network), the same change
  with every object of the snapshot rebuilt (value-equal, not identical: the worst
  case for change detection), and host 1 after a change it cannot see (a host-0 port
  re-plugged to another interface), which only asks `affects`.
Times are CPU time of this process (the goal is controller CPU; the wall time is
printed next to it). The last line is `full_ms=<float> incremental_ms=<float>
flows=<int>` (CPU medians).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

from bench.report import Figure, measured
from controller.core import model
from controller.core.pipeline import DatapathComputer, compute_datapath
from controller.core.pipeline.context import tunnel_interface_name

_T = TypeVar("_T")

UPLINK = "uplink0"
VXLAN_EVERY = 20
LB_EVERY = 50


def host_id(index: int) -> str:
    return f"{index + 1:08x}-0000-4000-8000-000000000000"


def build_snapshot(
    networks: int, ports_per_network: int, hosts: int, hosts_per_network: int | None = None
) -> model.Snapshot:
    """The synthetic topology; every network's ports spread round-robin over all hosts,
    or over `hosts_per_network` of them (network n: hosts n, n+1, ... modulo `hosts`)."""
    host_specs = tuple(
        model.HostSpec(host_id(h), f"h{h}", f"unix:/run/h{h}/db.sock", f"192.0.2.{h + 1}", UPLINK)
        for h in range(hosts)
    )
    nets: list[model.NetworkSpec] = []
    ports: list[model.PortSpec] = []
    lbs: list[model.LoadBalancerSpec] = []
    for n in range(networks):
        vxlan = n % VXLAN_EVERY == VXLAN_EVERY - 1
        net = model.NetworkSpec(
            f"net-{n}",
            f"tenant-{n % 97}",
            f"n{n}",
            "vxlan" if vxlan else "vlan",
            5000 + n if vxlan else n % 4094 + 1,
            "10.0.0.0/16",
        )
        nets.append(net)
        for p in range(ports_per_network):
            index = n * ports_per_network + p
            ports.append(
                model.PortSpec(
                    id=f"port-{index}",
                    network_id=net.id,
                    mac=f"02:00:{index >> 24 & 0xFF:02x}:{index >> 16 & 0xFF:02x}:"
                    f"{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}",
                    ips=(f"10.0.{p >> 8}.{(p & 0xFF) + 10}",),
                    host_id=host_specs[
                        index % hosts
                        if hosts_per_network is None
                        else (n + p % hosts_per_network) % hosts
                    ].id,
                    interface=f"tap{index}",
                )
            )
        if n % LB_EVERY == 0 and ports_per_network >= 3:
            backends = tuple(
                model.BackendSpec(f"10.0.0.{p + 10}", 8080, 1 + p % 2) for p in range(3)
            )
            lbs.append(model.LoadBalancerSpec(f"lb-{n}", net.id, "10.0.200.1", "tcp", 80, backends))
    return model.Snapshot(1, host_specs, tuple(nets), tuple(ports), tuple(lbs))


def view_of(snapshot: model.Snapshot, index: int) -> model.DatapathView:
    here = host_id(index)
    ofports = {UPLINK: 1}
    for i, host in enumerate(snapshot.hosts):
        if host.id != here:
            ofports[tunnel_interface_name(host.id)] = 2 + i
    local = (p for p in snapshot.ports if p.host_id == here and p.interface)
    ofports.update({p.interface: 100 + i for i, p in enumerate(local) if p.interface})
    return model.DatapathView(here, ofports)


def change_one_port(snapshot: model.Snapshot, host: str) -> tuple[model.Snapshot, str]:
    """A new snapshot where one port of `host` has a second address; every other object is
    shared with `snapshot`. Returns it and the changed port's network."""
    ports = list(snapshot.ports)
    index = next(i for i, p in enumerate(ports) if p.host_id == host and p.ips)
    port = ports[index]
    ports[index] = dataclasses.replace(port, ips=(*port.ips, "10.0.250.250"))
    return (
        dataclasses.replace(snapshot, revision=snapshot.revision + 1, ports=tuple(ports)),
        port.network_id,
    )


def replug_one_port(snapshot: model.Snapshot, host: str) -> model.Snapshot:
    """A new snapshot where one port of `host` moved to another interface (a VM re-plugged):
    its flows change on `host` only."""
    ports = list(snapshot.ports)
    index = next(i for i, p in enumerate(ports) if p.host_id == host and p.interface)
    ports[index] = dataclasses.replace(ports[index], interface=f"{ports[index].interface}-new")
    return dataclasses.replace(snapshot, revision=snapshot.revision + 1, ports=tuple(ports))


def rebuilt(snapshot: model.Snapshot) -> model.Snapshot:
    """A value-equal snapshot sharing no spec object with `snapshot`."""
    return model.Snapshot(
        snapshot.revision,
        tuple(dataclasses.replace(h) for h in snapshot.hosts),
        tuple(dataclasses.replace(n) for n in snapshot.networks),
        tuple(dataclasses.replace(p, ips=tuple(p.ips)) for p in snapshot.ports),
        tuple(
            dataclasses.replace(lb, backends=tuple(dataclasses.replace(b) for b in lb.backends))
            for lb in snapshot.load_balancers
        ),
    )


def timed(fn: Callable[[], _T]) -> tuple[float, float, _T]:
    """CPU ms of this process (what the goal is about; other processes on the machine
    barely move it), wall ms, and what `fn` returned."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000, result


class Samples:
    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []

    def add(self, cpu: float, wall: float) -> None:
        self.cpu.append(cpu)
        self.wall.append(wall)

    def text(self, digits: int = 1) -> str:
        cpu, wall = statistics.median(self.cpu), statistics.median(self.wall)
        spread = f"{min(self.cpu):.{digits}f}-{max(self.cpu):.{digits}f}"
        return f"{cpu:.{digits}f} ms CPU (spread {spread}; wall {wall:.{digits}f} ms)"

    @property
    def median(self) -> float:
        return statistics.median(self.cpu)


def measure_scale(
    networks: int, ports_per_network: int, hosts: int, repeats: int
) -> tuple[Samples, Samples, Samples, int]:
    """(full compute, incremental compute after one port change, the peer: the full
    compute of the changed snapshot), CPU ms of host 0, and its number of flows."""
    snapshot = build_snapshot(networks, ports_per_network, hosts)
    here = host_id(0)
    view = view_of(snapshot, 0)
    changed, _network = change_one_port(snapshot, here)
    full, peer, incremental = Samples(), Samples(), Samples()
    flows = 0
    compute_datapath(snapshot, view)  # warm-up: first-use caches, imports
    computer = DatapathComputer(here)
    computer.compute(snapshot, view)
    for i in range(repeats):
        cpu, wall, config = timed(lambda: compute_datapath(snapshot, view))
        full.add(cpu, wall)
        flows = len(config.flows)
        peer.add(*timed(lambda: compute_datapath(changed, view))[:2])
        before, after = (snapshot, changed) if i % 2 == 0 else (changed, snapshot)
        computer.compute(before, view)
        incremental.add(*timed(lambda a=after: computer.compute(a, view))[:2])
    return full, incremental, peer, flows


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py): full and incremental compute, one host,
    at growing sizes (10 ports per network, 4 hosts)."""
    sizes = (400, 1000) if quick else (400, 1000, 4000)
    figures: list[Figure] = []
    per_flow: list[str] = []
    for networks in sizes:
        full, incremental, peer, flows = measure_scale(networks, 10, 4, 3)
        per_flow.append(f"{networks:,}: {full.median * 1000 / flows:.1f} µs/flow")
        figures.append(
            measured(
                f"full compute, one host, {networks:,} networks x 10 ports ({flows:,} flows)",
                "ms CPU",
                full.cpu,
                goal="< 1,000 ms at 4,000 networks, linear" if networks == 4000 else "linear",
                met=full.median < 1000 if networks == 4000 else None,
            )
        )
        figures.append(
            measured(
                f"one port change, incremental compute, {networks:,} networks",
                "ms CPU",
                incremental.cpu,
                peer="full compute of the changed snapshot",
                peer_values=peer.cpu,
                goal="< 10 ms per affected host",
                met=incremental.median < 10,
            )
        )
    figures[-2] = dataclasses.replace(figures[-2], notes="; ".join(per_flow))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=4000)
    parser.add_argument("--ports-per-network", type=int, default=10)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.hosts < 2:
        parser.error("--hosts must be at least 2 (one host measured, one other)")

    snapshot = build_snapshot(args.networks, args.ports_per_network, args.hosts)
    here, there = host_id(0), host_id(1)
    view, other_view = view_of(snapshot, 0), view_of(snapshot, 1)
    changed, network = change_one_port(snapshot, here)
    replugged = replug_one_port(snapshot, here)
    print(
        f"snapshot: {len(snapshot.networks)} networks, {len(snapshot.ports)} ports, "
        f"{len(snapshot.load_balancers)} load balancers, {len(snapshot.hosts)} hosts; "
        f"host 0 has {len(view.ofports)} switch ports"
    )

    full, peer, incremental, rebuilt_inc, other_inc, skip = (Samples() for _ in range(6))
    flows = 0
    compute_datapath(snapshot, view)  # warm-up: first-use caches, imports
    computer, other = DatapathComputer(here), DatapathComputer(there)
    computer.compute(snapshot, view)
    other.compute(snapshot, other_view)
    for i in range(args.repeats):
        cpu, wall, config = timed(lambda: compute_datapath(snapshot, view))
        full.add(cpu, wall)
        flows = len(config.flows)
        cpu, wall, expected = timed(lambda: compute_datapath(changed, view))
        peer.add(cpu, wall)
        # Alternate between the two snapshots, so every run sees a real change.
        before, after = (snapshot, changed) if i % 2 == 0 else (changed, snapshot)
        computer.compute(before, view)
        cpu, wall, result = timed(lambda a=after: computer.compute(a, view))
        incremental.add(cpu, wall)
        if after is changed and set(result.flows) != set(expected.flows):
            raise SystemExit("incremental and full computes disagree")
        fresh = rebuilt(after)
        computer.compute(before, view)
        rebuilt_inc.add(*timed(lambda f=fresh: computer.compute(f, view))[:2])
        # Host 1 has ports in the changed network: it sees the new address too.
        other.compute(before, other_view)
        other_inc.add(*timed(lambda a=after: other.compute(a, other_view))[:2])
        # A port of host 0 moved to another interface: nothing changes on host 1.
        other.compute(snapshot, other_view)
        cpu, wall, affected = timed(lambda: other.affects(replugged, other_view))
        if affected:
            raise SystemExit("host 1 reports a change it cannot see")
        skip.add(cpu, wall)
    print(f"full compute, host 0: {full.text()}, {flows} flows")
    print(f"full compute of the changed snapshot (peer): {peer.text()}")
    print(
        f"incremental, one port of host 0 gets an address (network {network}): "
        f"{incremental.text(2)} = {incremental.median / peer.median:.4f}x the peer"
    )
    print(f"  the same on host 1 (ports in that network): {other_inc.text(2)}")
    print(f"  the same, every spec object rebuilt (value-equal): {rebuilt_inc.text(2)}")
    print(f"unaffected host 1 (a host-0 port re-plugged), `affects` only: {skip.text(3)}")
    print(f"medians of {args.repeats} runs")
    print(f"full_ms={full.median:.1f} incremental_ms={incremental.median:.2f} flows={flows}")


if __name__ == "__main__":
    main()
