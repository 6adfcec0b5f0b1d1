"""The incremental computer gives exactly what a fresh computation gives.

A host's `DatapathComputer` is fed a sequence of random snapshots, each a small
change of the previous one (a port moved, re-addressed, re-plugged, added or
removed; a network's segment, a load balancer, a host's tunnel or uplink, the
switch's ports changed; the tuples reordered). After every step its result must
equal a fresh computer's result for the same snapshot, flow for flow in the same
order, group for group (same cookies, same group ids), or both must refuse the
snapshot. Hash collisions of group ids and conntrack zones are forced in some
runs, so the global fallbacks are exercised too. The walks are seeded (the same
every run) and, besides, drawn by hypothesis.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import model
from controller.core.flows import GroupAction
from controller.core.pipeline import DatapathComputer, PipelineError, compute_datapath
from controller.core.pipeline import engine as pipeline_engine
from controller.core.pipeline import groups as pipeline_groups
from controller.core.pipeline import load_balancer as pipeline_lb
from controller.core.pipeline.context import tunnel_interface_name
from controller.core.pipeline.engine import DatapathConfig, FlowSequence

pytestmark = pytest.mark.unit

HOSTS = tuple(f"{c * 8}-0000-4000-8000-{c * 12}" for c in "abcd")
HERE = HOSTS[0]
NETWORK_IDS = tuple(f"net-{i}" for i in range(7))
INTERFACES = tuple(f"tap{i}" for i in range(12))
CHECK = model.HealthCheckSpec(interval=1.0, timeout=0.5, rise=2, fall=2)


class World:
    """Random snapshots and views, and small random changes of them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_port = 0

    def host(self, host_id: str) -> model.HostSpec:
        rng = self.rng
        tunnel = rng.choice([None, f"192.0.2.{HOSTS.index(host_id) + 1}", "192.0.2.1"])
        return model.HostSpec(
            host_id, host_id[:1], "unix:/x", tunnel, rng.choice([None, "up0", "up1"])
        )

    def network(self, network_id: str) -> model.NetworkSpec:
        rng = self.rng
        kind = rng.choice(["vlan", "vxlan"])
        # A small pool of segments: two networks on one segment now and then.
        segment = rng.randrange(10, 30)
        if rng.random() < 0.02:
            segment = 5000  # out of the VLAN range for a VLAN network
        return model.NetworkSpec(network_id, "t", network_id, kind, segment)

    def port(self, port_id: str | None = None) -> model.PortSpec:
        rng = self.rng
        if port_id is None:
            port_id = f"port-{self.next_port}"
            self.next_port += 1
        number = int(port_id[5:])
        ips: tuple[str, ...] = ()
        if rng.random() < 0.85:
            count = rng.choice([1, 1, 1, 2])
            ips = tuple(f"10.0.0.{rng.randrange(1, 120)}" for _ in range(count))
        if rng.random() < 0.05:
            ips = (*ips, "2001:db8::1")
        host = rng.choice([*HOSTS, HERE, HERE, None])
        return model.PortSpec(
            id=port_id,
            network_id=rng.choice([*NETWORK_IDS, "net-gone"]),
            mac=f"02:00:00:00:{number >> 8:02x}:{number & 0xFF:02x}",
            ips=ips,
            host_id=host,
            interface=rng.choice([*INTERFACES, None]) if host else None,
        )

    def load_balancer(self, lb_id: str) -> model.LoadBalancerSpec:
        rng = self.rng
        backends = tuple(
            model.BackendSpec(
                f"10.0.0.{rng.randrange(1, 60)}",
                rng.choice([80, 8080]),
                rng.randrange(1, 4),
                healthy=rng.random() < 0.8,
                port_id=rng.choice([None, None, f"port-{rng.randrange(0, 30)}"]),
            )
            for _ in range(rng.randrange(0, 4))
        )
        return model.LoadBalancerSpec(
            lb_id,
            rng.choice(NETWORK_IDS),
            f"10.0.1.{rng.randrange(1, 4)}",
            rng.choice(["tcp", "udp"]),
            rng.choice([80, 443]),
            backends,
            rng.choice([None, CHECK]),
        )

    def snapshot(self) -> model.Snapshot:
        rng = self.rng
        return model.Snapshot(
            revision=1,
            hosts=tuple(self.host(h) for h in HOSTS),
            networks=tuple(self.network(n) for n in rng.sample(NETWORK_IDS, 5)),
            ports=tuple(self.port() for _ in range(rng.randrange(8, 25))),
            load_balancers=tuple(self.load_balancer(f"lb-{i}") for i in range(rng.randrange(3))),
        )

    def view(self) -> model.DatapathView:
        rng = self.rng
        ofports = {name: 3 + i for i, name in enumerate(INTERFACES) if rng.random() < 0.8}
        if rng.random() < 0.1:
            ofports[rng.choice(INTERFACES)] = 3  # two interfaces on one ofport
        ofports.update({"up0": 1, "up1": 2})
        for i, peer in enumerate(HOSTS[1:]):
            if rng.random() < 0.9:
                ofports[tunnel_interface_name(peer)] = 20 + i
        if rng.random() < 0.05:
            ofports["reserved"] = 0xFFFFFFFE
        return model.DatapathView(HERE, ofports)

    def changed(
        self, snapshot: model.Snapshot, view: model.DatapathView
    ) -> tuple[model.Snapshot, model.DatapathView]:
        """One small change, the way an incremental loader gives it: every untouched
        object shared with the previous snapshot."""
        rng = self.rng
        replace = dataclasses.replace
        ports = list(snapshot.ports)
        kind = rng.choice(
            ["port"] * 8
            + ["add-port", "drop-port", "network", "drop-network", "lb", "host", "view"]
            + ["shuffle", "rebuild", "nothing"]
        )
        if kind == "port" and ports:
            i = rng.randrange(len(ports))
            fresh = self.port(ports[i].id)
            field = rng.choice(["ips", "host_id", "interface", "network_id", "all"])
            ports[i] = (
                fresh if field == "all" else replace(ports[i], **{field: getattr(fresh, field)})
            )
        elif kind == "add-port":
            ports.insert(rng.randrange(len(ports) + 1), self.port())
        elif kind == "drop-port" and ports:
            del ports[rng.randrange(len(ports))]
        elif kind in ("network", "drop-network"):
            networks = {n.id: n for n in snapshot.networks}
            network_id = rng.choice(NETWORK_IDS)
            if kind == "network":
                networks[network_id] = self.network(network_id)
            else:
                networks.pop(network_id, None)
            return replace(snapshot, networks=tuple(networks.values())), view
        elif kind == "lb":
            lbs = {lb.id: lb for lb in snapshot.load_balancers}
            lb_id = f"lb-{rng.randrange(4)}"
            if lb_id in lbs and rng.random() < 0.3:
                del lbs[lb_id]
            else:
                lbs[lb_id] = self.load_balancer(lb_id)
            return replace(snapshot, load_balancers=tuple(lbs.values())), view
        elif kind == "host":
            hosts = list(snapshot.hosts)
            i = rng.randrange(len(hosts))
            hosts[i] = self.host(hosts[i].id)
            return replace(snapshot, hosts=tuple(hosts)), view
        elif kind == "view":
            ofports = dict(view.ofports)
            name = rng.choice([*INTERFACES, "up0", tunnel_interface_name(rng.choice(HOSTS[1:]))])
            if name in ofports and rng.random() < 0.5:
                del ofports[name]
            else:
                ofports[name] = rng.randrange(1, 40)
            return snapshot, model.DatapathView(HERE, ofports)
        elif kind == "shuffle":
            return replace(
                snapshot,
                networks=tuple(rng.sample(snapshot.networks, len(snapshot.networks))),
                ports=tuple(rng.sample(ports, len(ports))),
            ), view
        elif kind == "rebuild":  # value-equal, no object shared
            return model.Snapshot(
                snapshot.revision,
                tuple(replace(h) for h in snapshot.hosts),
                tuple(replace(n) for n in snapshot.networks),
                tuple(replace(p) for p in snapshot.ports),
                tuple(replace(lb) for lb in snapshot.load_balancers),
            ), model.DatapathView(HERE, dict(view.ofports))
        return replace(snapshot, ports=tuple(ports)), view


def outcome(compute: Callable[[], DatapathConfig]) -> DatapathConfig | type[PipelineError]:
    try:
        return compute()
    except PipelineError:
        return PipelineError


def walk(
    seed: int | random.Random, steps: int
) -> Iterator[tuple[model.Snapshot, model.DatapathView]]:
    world = World(seed if isinstance(seed, random.Random) else random.Random(seed))
    snapshot, view = world.snapshot(), world.view()
    for _ in range(steps):
        yield snapshot, view
        snapshot, view = world.changed(snapshot, view)


def check_walk(seed: int | random.Random, steps: int) -> int:
    """Walk and compare; returns how many steps gave a result (not a refusal)."""
    computer = DatapathComputer(HERE)
    computed = 0
    previous: DatapathConfig | type[PipelineError] | None = None
    for snapshot, view in walk(seed, steps):
        may_change = outcome(lambda s=snapshot, v=view: computer.affects(s, v))
        incremental = outcome(lambda s=snapshot, v=view: computer.compute(s, v))
        fresh = outcome(lambda s=snapshot, v=view: DatapathComputer(HERE).compute(s, v))
        assert incremental == fresh
        if isinstance(incremental, DatapathConfig):
            computed += 1
            if may_change is False:
                assert incremental is previous
            full = compute_datapath(snapshot, view)
            assert full.flows == tuple(sorted(full.flows, key=lambda f: (f.table, -f.priority)))
            assert set(full.flows) == set(incremental.flows)
            assert len(full.flows) == len(incremental.flows)
            assert full.groups == incremental.groups
            # Groups by id, each pointed to by a flow, and every group pointed to there.
            ids = [group.group_id for group in full.groups]
            assert ids == sorted(set(ids))
            assert set(ids) == {
                action.group_id
                for flow in full.flows
                for action in flow.actions
                if isinstance(action, GroupAction)
            }
        previous = incremental
    return computed


@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_fresh_over_random_changes(seed: int) -> None:
    assert check_walk(seed, 150) > 30


@settings(max_examples=20, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_incremental_equals_fresh_over_any_walk(rng: random.Random) -> None:
    check_walk(rng, 40)


@pytest.mark.parametrize("seed", range(4))
def test_incremental_equals_fresh_when_group_ids_and_zones_collide(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_group_hash, real_zone_hash = pipeline_groups.group_hash, pipeline_lb._zone_hash
    # 256 possible group ids, 16 zones: collisions (and the zero id) all the time.
    monkeypatch.setattr(pipeline_groups, "group_hash", lambda c, s: real_group_hash(c, s) & 0xFF)
    monkeypatch.setattr(pipeline_lb, "_zone_hash", lambda m, s: real_zone_hash(m, s) & 0xF)
    assert check_walk(100 + seed, 120) > 20


@pytest.mark.parametrize("seed", range(3))
def test_incremental_equals_fresh_when_every_change_is_a_bulk_one(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Changes of >= _MANY_NETWORKS networks take the bulk path (collector paused, groups
    # sorted once at assembly); the walks' snapshots are small, so the threshold is 1.
    monkeypatch.setattr(pipeline_engine, "_MANY_NETWORKS", 1)
    assert check_walk(200 + seed, 120) > 20


def test_incremental_equals_fresh_when_every_id_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every content and network wants id 1: ids go by canonical order, so a new group
    # or zone moves those after it, and units that did not change must follow.
    monkeypatch.setattr(pipeline_groups, "group_hash", lambda c, s: s + 1)
    monkeypatch.setattr(pipeline_lb, "_zone_hash", lambda m, s: s + 1)
    assert check_walk(7, 150) > 30


def computable(seed: int) -> tuple[model.Snapshot, model.DatapathView]:
    """The first snapshot of a walk that is not refused."""
    return next(
        (s, v)
        for s, v in walk(seed, 200)
        if isinstance(outcome(lambda s=s, v=v: compute_datapath(s, v)), DatapathConfig)
    )


def test_nothing_changed_is_found_without_recomputing() -> None:
    snapshot, view = computable(3)
    computer = DatapathComputer(HERE)
    first = computer.compute(snapshot, view)
    same = dataclasses.replace(snapshot, revision=snapshot.revision + 1)
    assert not computer.affects(same, model.DatapathView(HERE, dict(view.ofports)))
    assert computer.compute(same, view) is first


def test_a_change_on_another_host_only_matters_where_it_is_seen() -> None:
    up = "uplink"
    hosts = tuple(model.HostSpec(h, h[:1], "unix:/x", None, up) for h in HOSTS[:2])
    red = model.NetworkSpec("net-red", "t", "red", "vlan", 10)
    blue = model.NetworkSpec("net-blue", "t", "blue", "vlan", 11)
    here = model.PortSpec("port-1", red.id, "02:00:00:00:00:01", ("10.0.0.1",), HOSTS[0], "tap1")
    there = model.PortSpec("port-2", blue.id, "02:00:00:00:00:02", ("10.0.0.2",), HOSTS[1], "tap2")
    snapshot = model.Snapshot(1, hosts, (red, blue), (here, there))
    view = model.DatapathView(HOSTS[0], {"tap1": 5, up: 1})
    computer = DatapathComputer(HOSTS[0])
    computer.compute(snapshot, view)
    moved = dataclasses.replace(there, ips=("10.0.0.3",))
    blue_changed = dataclasses.replace(snapshot, ports=(here, moved))
    assert not computer.affects(blue_changed, view)  # no port of blue here
    red_there = dataclasses.replace(moved, network_id=red.id)
    assert computer.affects(dataclasses.replace(snapshot, ports=(here, red_there)), view)


def test_a_refused_snapshot_leaves_the_computer_usable() -> None:
    snapshot, view = computable(5)
    computer = DatapathComputer(HERE)
    good = computer.compute(snapshot, view)
    red, *others = snapshot.networks
    clash = dataclasses.replace(red, id="net-clash")
    with pytest.raises(PipelineError, match="share one segment"):
        computer.compute(dataclasses.replace(snapshot, networks=(red, clash, *others)), view)
    assert computer.compute(snapshot, view) == good


def test_a_view_of_another_host_is_refused() -> None:
    with pytest.raises(ValueError, match="given to the computer of"):
        DatapathComputer(HERE).compute(model.Snapshot(1), model.DatapathView(HOSTS[1]))


def test_flow_sequence_behaves_as_the_tuple_of_its_flows() -> None:
    snapshot, view = computable(9)
    flows = DatapathComputer(HERE).compute(snapshot, view).flows
    assert isinstance(flows, FlowSequence)
    as_tuple = tuple(flows)
    assert len(flows) == len(as_tuple) > 10
    assert [flows[i] for i in range(len(flows))] == list(as_tuple)
    assert flows[-1] == as_tuple[-1] and flows[3:7] == as_tuple[3:7]
    assert flows == as_tuple and as_tuple == flows and hash(flows) == hash(as_tuple)
    assert flows != as_tuple[:-1]
    with pytest.raises(IndexError):
        flows[len(flows)]


def test_unchanged_units_keep_their_flow_tuples() -> None:
    snapshot, view = computable(11)
    computer = DatapathComputer(HERE)
    before = computer.compute(snapshot, view).flows
    assert isinstance(before, FlowSequence)
    port = next(p for p in snapshot.ports if p.host_id == HERE and p.ips)
    readdressed = dataclasses.replace(port, ips=("10.0.0.250",))
    after = computer.compute(
        dataclasses.replace(
            snapshot, ports=tuple(readdressed if p is port else p for p in snapshot.ports)
        ),
        view,
    ).flows
    assert isinstance(after, FlowSequence)
    kept = {id(chunk) for chunk in before.chunks} & {id(chunk) for chunk in after.chunks}
    # Only the port's network was recomputed (if it has a unit here at all).
    assert len(after.chunks) - len(kept) <= 1
