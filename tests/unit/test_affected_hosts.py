"""A change wakes only the hosts it can affect: every host it does not name computes
exactly the same flows, groups and port states from the new snapshot as from the old
one, and has the same ports bound to it (its OVSDB intents and status reports).

Random snapshots over four hosts (networks on a few segments, now and then shared or
invalid; ports moved, re-addressed, re-plugged, added, removed; load balancers;
hosts' tunnels and uplinks), one random change at a time, seeded and hypothesis-drawn.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import model
from controller.core.pipeline import DatapathComputer, PipelineError
from controller.core.pipeline.affected import EVERY_HOST, DependencyIndex
from controller.core.pipeline.context import tunnel_interface_name
from controller.core.pipeline.engine import DatapathConfig

pytestmark = pytest.mark.unit

HOSTS = tuple(f"{c * 8}-0000-4000-8000-{c * 12}" for c in "abcd")
NETWORKS = tuple(f"net-{i}" for i in range(6))


class World:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_port = 0

    def host(self, index: int) -> model.HostSpec:
        rng = self.rng
        return model.HostSpec(
            HOSTS[index],
            f"h{index}",
            "unix:/x",
            rng.choice([None, f"192.0.2.{index + 1}", f"192.0.2.{index + 1}", "192.0.2.9"]),
            rng.choice([None, "up0"]),
        )

    def network(self, network_id: str) -> model.NetworkSpec:
        rng = self.rng
        segment = 10 + NETWORKS.index(network_id) if rng.random() < 0.9 else rng.randrange(10, 13)
        if rng.random() < 0.03:
            segment = 5000  # invalid for a VLAN
        return model.NetworkSpec(
            network_id, "t", network_id, rng.choice(["vlan", "vxlan"]), segment
        )

    def port(self, port_id: str | None = None) -> model.PortSpec:
        rng = self.rng
        if port_id is None:
            port_id = f"port-{self.next_port}"
            self.next_port += 1
        number = int(port_id[5:])
        host = rng.choice([*HOSTS, None])
        return model.PortSpec(
            id=port_id,
            network_id=rng.choice([*NETWORKS, "net-gone"]),
            mac=f"02:00:00:00:{number >> 8:02x}:{number & 0xFF:02x}",
            ips=(f"10.0.0.{rng.randrange(1, 200)}",) if rng.random() < 0.9 else (),
            host_id=host,
            interface=f"tap{number % 7}" if host else None,
        )

    def load_balancer(self, lb_id: str) -> model.LoadBalancerSpec:
        rng = self.rng
        backends = tuple(
            model.BackendSpec(f"10.0.0.{rng.randrange(1, 60)}", 80, rng.randrange(1, 4))
            for _ in range(rng.randrange(0, 3))
        )
        return model.LoadBalancerSpec(
            lb_id, rng.choice(NETWORKS), f"10.0.1.{rng.randrange(1, 4)}", "tcp", 80, backends
        )

    def snapshot(self) -> model.Snapshot:
        rng = self.rng
        return model.Snapshot(
            revision=1,
            hosts=tuple(self.host(i) for i in range(len(HOSTS))),
            networks=tuple(self.network(n) for n in rng.sample(NETWORKS, 5)),
            ports=tuple(self.port() for _ in range(rng.randrange(6, 20))),
            load_balancers=tuple(self.load_balancer(f"lb-{i}") for i in range(rng.randrange(3))),
        )

    def changed(self, snapshot: model.Snapshot) -> model.Snapshot:
        rng = self.rng
        replace = dataclasses.replace
        ports = list(snapshot.ports)
        kind = rng.choice(["port"] * 6 + ["add", "drop", "network", "drop-network", "lb", "host"])
        if kind == "port" and ports:
            i = rng.randrange(len(ports))
            fresh = self.port(ports[i].id)
            field = rng.choice(["ips", "host_id", "interface", "network_id", "all"])
            ports[i] = (
                fresh if field == "all" else replace(ports[i], **{field: getattr(fresh, field)})
            )
        elif kind == "add":
            ports.append(self.port())
        elif kind == "drop" and ports:
            del ports[rng.randrange(len(ports))]
        elif kind in ("network", "drop-network"):
            networks = {n.id: n for n in snapshot.networks}
            network_id = rng.choice(NETWORKS)
            if kind == "network":
                networks[network_id] = self.network(network_id)
            else:
                networks.pop(network_id, None)
            return replace(snapshot, networks=tuple(networks.values()))
        elif kind == "lb":
            lbs = {lb.id: lb for lb in snapshot.load_balancers}
            lb_id = f"lb-{rng.randrange(3)}"
            if lb_id in lbs and rng.random() < 0.3:
                del lbs[lb_id]
            else:
                lbs[lb_id] = self.load_balancer(lb_id)
            return replace(snapshot, load_balancers=tuple(lbs.values()))
        elif kind == "host":
            hosts = list(snapshot.hosts)
            i = rng.randrange(len(hosts))
            hosts[i] = self.host(i)
            return replace(snapshot, hosts=tuple(hosts))
        return replace(snapshot, ports=tuple(ports))


def view_of(host_id: str) -> model.DatapathView:
    """The switch of `host_id` with every interface the world uses plugged in."""
    ofports = {f"tap{i}": 3 + i for i in range(7)} | {"up0": 1}
    for i, peer in enumerate(HOSTS):
        if peer != host_id:
            ofports[tunnel_interface_name(peer)] = 20 + i
    return model.DatapathView(host_id, ofports)


def outcome(snapshot: model.Snapshot, host_id: str) -> DatapathConfig | str:
    try:
        return DatapathComputer(host_id).compute(snapshot, view_of(host_id))
    except PipelineError as exc:
        return f"refused: {exc}"


def bound_to(snapshot: model.Snapshot, host_id: str) -> frozenset[model.PortSpec]:
    return frozenset(p for p in snapshot.ports if p.host_id == host_id)


def check_walk(rng: random.Random, steps: int) -> tuple[int, int]:
    """Walk; returns (hosts skipped, host passes that changed something) for the caller
    to see that the walk exercised both."""
    world = World(rng)
    snapshot = world.snapshot()
    index = DependencyIndex()
    index.reset(snapshot)
    skipped = changed = 0
    for _ in range(steps):
        new = world.changed(snapshot)
        affected = index.affected_hosts(model.snapshot_change(snapshot, new))
        for host_id in HOSTS:
            same = outcome(snapshot, host_id) == outcome(new, host_id) and bound_to(
                snapshot, host_id
            ) == bound_to(new, host_id)
            if affected is not EVERY_HOST and host_id not in affected:
                assert same, f"{host_id} was not woken for a change that affects it"
                skipped += 1
            elif not same:
                changed += 1
        # Kept up to date from changes alone, the index is what a fresh one gives.
        fresh = DependencyIndex()
        fresh.reset(new)
        for network_id in (*NETWORKS, "net-gone"):
            assert index.hosts_in(network_id) == fresh.hosts_in(network_id)
        snapshot = new
    return skipped, changed


@pytest.mark.parametrize("seed", range(6))
def test_unwoken_hosts_compute_the_same_as_before(seed: int) -> None:
    skipped, changed = check_walk(random.Random(seed), 60)
    assert skipped > 20 and changed > 20  # both kinds of host were seen


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_unwoken_hosts_compute_the_same_as_before_on_any_walk(rng: random.Random) -> None:
    check_walk(rng, 20)


def test_a_port_change_wakes_only_the_hosts_of_its_network() -> None:
    world = World(random.Random(0))
    base = world.snapshot()
    network = model.NetworkSpec("net-0", "t", "n0", "vlan", 10)
    other = model.NetworkSpec("net-1", "t", "n1", "vlan", 11)
    a, b, c, _ = HOSTS
    ports = (
        model.PortSpec("port-1", "net-0", "02:00:00:00:00:01", ("10.0.0.1",), a, "tap1"),
        model.PortSpec("port-2", "net-0", "02:00:00:00:00:02", ("10.0.0.2",), b, "tap2"),
        model.PortSpec("port-3", "net-1", "02:00:00:00:00:03", ("10.0.0.3",), c, "tap3"),
    )
    snapshot = dataclasses.replace(base, networks=(network, other), ports=ports, load_balancers=())
    index = DependencyIndex()
    index.reset(snapshot)
    moved = dataclasses.replace(ports[0], ips=("10.0.0.9",))
    change = model.SnapshotChange(ports=((ports[0], moved),))
    assert index.affected_hosts(change) == {a, b}  # c has no port in net-0
    host_change = model.SnapshotChange(hosts=((base.hosts[0], base.hosts[0]),))
    assert index.affected_hosts(host_change) is EVERY_HOST
