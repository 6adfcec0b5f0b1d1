"""Incremental computation of one datapath's flows and groups.

A `DatapathComputer` belongs to one host and is fed every snapshot (and switch view)
in turn. Like ovn-controller's incremental processing engine it keeps the result of
every unit of work with the inputs it was computed from, and recomputes only the
units whose inputs changed:

    unit        one network with a port realized on this datapath: its flows in every
                table, its flood groups and its load balancers (flows and select groups)
    inputs      the network as this datapath sees it (`LocalNetwork`: spec, every bound
                port of it with the ofports of the local ones), the paths to other hosts
                (uplink, tunnels), its load balancer specs and its conntrack zone; then
                the ids its groups got (the flows pointing to them)

Finding what changed does no per-object Python work for what did not change: the
snapshot's tuples are compared with the previous ones by their longest common prefix
and suffix (C-level tuple comparison, identity first, a few slices), so a snapshot
sharing its unchanged objects with the previous one (as an incremental loader builds
it) costs pointer comparisons plus O(what changed); a rebuilt but value-equal one
costs one dataclass comparison per object.

The result is exactly what a fresh computer gives for the same snapshot and view,
in the same order (units by network metadata, each unit's flows in the order its
builders give them): a unit's output depends only on its inputs, and the two things
computed from the whole set stay valid per unit:
- group ids: a content's id is its salt-0 hash as long as no two contents of this
  datapath collide (`groups.first_choice_id`); on a collision the global,
  order-independent assignment (`groups.assign_group_ids`) is used and every unit
  whose ids moved is rebuilt;
- conntrack zones: computed from the set of networks with load balancers here when
  that set changes; a unit whose zone moved is rebuilt.
Flows of different units never share a match (each matches its network's metadata,
segment or local ports), except when two local ports share an ofport: then duplicates
across units are resolved at assembly as within a unit (equal: one flow; different:
PipelineError). Any error leaves the computer empty: the next snapshot is computed
from scratch.
"""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate, chain
from operator import attrgetter, itemgetter
from typing import Final, TypeVar, overload

from controller.core import gc_policy
from controller.core.flows import Flow, Group
from controller.core.model import (
    DatapathView,
    LoadBalancerSpec,
    NetworkSpec,
    PortSpec,
    Snapshot,
)
from controller.core.pipeline.arp_responder import arp_responder_network_flows
from controller.core.pipeline.classify import classify_network_flows
from controller.core.pipeline.context import (
    BoundPort,
    DatapathContext,
    LocalNetwork,
    bound_port,
    host_paths,
    local_network,
    network_metadata,
    ofport_of,
    switch_ports,
)
from controller.core.pipeline.dhcp import dhcp_network_flows
from controller.core.pipeline.groups import GroupContent, assign_group_ids, first_choice_id
from controller.core.pipeline.l2_forward import (
    FloodGroups,
    flood_groups,
    l2_flood_flows,
    l2_unicast_flows,
)
from controller.core.pipeline.load_balancer import (
    LocalLoadBalancer,
    backend_group,
    conntrack_zones,
    load_balancer_network_flows,
    load_balancer_order,
    load_balancer_own_flows,
    local_load_balancer,
)
from controller.core.pipeline.nd_responder import nd_responder_network_flows
from controller.core.pipeline.port_security import port_security_network_flows
from controller.core.pipeline.tables import (
    PipelineError,
    check_flows,
    check_group,
    table_miss_flows,
)
from controller.core.pipeline.udp_pins import NO_UDP_BACKENDS, UdpBackends, udp_backends

__all__ = ["DatapathComputer", "DatapathConfig", "FlowSequence", "unique_flows"]

_T = TypeVar("_T")
_EMPTY: Final = Snapshot(revision=0)
_MANY_NETWORKS: Final = 256
_TABLE_MISS: Final = table_miss_flows()
_FLOWS: Final = attrgetter("flows")
_LB_ID: Final = attrgetter("id")


@contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector while many units are (re)built.

    NOTE: a full compute allocates about a million container objects (flows, matches,
    actions) that all survive it and form no reference cycle; while they pile up, the
    collector's generational heuristics scan them again and again for nothing (at 4,000
    networks: 1.3 s of a 2.6 s compute, growing faster than linearly; see BENCHMARKS.md).
    Afterwards they are settled out of the young generations' way (0.23 s at 4,000
    networks otherwise). The process's policy: controller.core.gc_policy.
    """
    if not pause:
        yield
        return
    with gc_policy.paused_unless_paused():
        yield
    gc_policy.settle()


class FlowSequence(Sequence[Flow]):
    """The flows of a datapath as the units' own tuples, one after the other.

    Copying 150k references into one new tuple costs more than recomputing the unit
    a port change touched (every flow object's refcount is touched, out of cache), so
    a result shares its units' tuples. Immutable; equal to any sequence of equal flows.
    """

    __slots__ = ("_chunks", "_ends", "_length")

    def __init__(self, chunks: Iterable[tuple[Flow, ...]]) -> None:
        self._chunks = tuple(chunks)
        self._length = sum(map(len, self._chunks))
        self._ends: list[int] | None = None  # where each chunk ends, when first indexed

    @property
    def chunks(self) -> tuple[tuple[Flow, ...], ...]:
        """The units' tuples: the same tuple object from one result to the next while its
        unit is unchanged, so a consumer can cache what it derives (cookies) per chunk."""
        return self._chunks

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Flow]:
        return chain.from_iterable(self._chunks)

    @overload
    def __getitem__(self, index: int) -> Flow: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Flow, ...]: ...

    def __getitem__(self, index: int | slice) -> Flow | tuple[Flow, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("flow index out of range")
        if self._ends is None:
            self._ends = list(accumulate(map(len, self._chunks)))
        chunk = bisect_right(self._ends, index)
        start = self._ends[chunk - 1] if chunk else 0
        return self._chunks[chunk][index - start]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(map(operator.eq, self, other))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"FlowSequence(<{self._length} flows>)"


@dataclass(frozen=True, slots=True)
class DatapathConfig:
    flows: Sequence[Flow]  # compute_datapath: a tuple, in canonical order
    groups: tuple[Group, ...]  # by group id
    realized_ports: frozenset[str]  # bound here with an ofport: their flows are in `flows`
    unrealized_ports: frozenset[str]  # bound here, interface not (yet) on the switch
    udp_backends: UdpBackends = NO_UDP_BACKENDS  # of the UDP listeners served here


def unique_flows(
    flows: Sequence[Flow], *, check: bool = True, group_ids: Container[int] | None = None
) -> tuple[Flow, ...]:
    """`flows` without exact duplicates (the first is kept), each checked against its
    table's declaration (and pointing to `group_ids` only, when given); two different
    flows for one match are a PipelineError."""
    if check:
        check_flows(flows, group_ids)
    # All in C (a Flow is a tuple): when no two flows share a match, none share a key.
    if len(set(map(_MATCH, flows))) == len(flows):
        return tuple(flows)
    # Some match twice: keep the first of equal flows, refuse different ones.
    kept: dict[tuple[object, ...], Flow] = {}
    for flow in flows:
        previous = kept.setdefault(_match_key(flow), flow)
        if previous is not flow and previous != flow:
            raise PipelineError(f"two flows for one match: {previous!r} and {flow!r}")
    return tuple(kept.values())


# (table, priority, match): equal for two flows exactly when a switch takes them for the
# same entry.
_match_key: Final[Callable[[Flow], tuple[object, ...]]] = itemgetter(slice(0, 3))
_MATCH: Final = attrgetter("match")


def _window(old: Sequence[_T], new: Sequence[_T]) -> tuple[Sequence[_T], Sequence[_T]]:
    """What is between the longest common prefix and suffix of `old` and `new`: the
    items removed and the items added (plus unchanged ones between two changes, which
    the caller sees as removed and added again)."""
    if old is new or old == new:
        return (), ()
    shortest = min(len(old), len(new))
    lo, hi = 0, shortest  # old[:lo] == new[:lo]; the common prefix is at most hi long
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[lo:mid] == new[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    prefix = lo
    lo, hi = 0, shortest - prefix
    end_old, end_new = len(old), len(new)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[end_old - mid : end_old - lo] == new[end_new - mid : end_new - lo]:
            lo = mid
        else:
            hi = mid - 1
    removed, added = old[prefix : end_old - lo], new[prefix : end_new - lo]
    if not removed or not added:  # a cold start: nothing removed, 40,000 ports added
        return removed, added
    kept = {id(item) for item in removed} & {id(item) for item in added}
    if kept:  # moved, not changed
        removed = [item for item in removed if id(item) not in kept]
        added = [item for item in added if id(item) not in kept]
    return removed, added


@dataclass(slots=True)
class _Unit:
    net: LocalNetwork
    paths: DatapathContext
    lb_specs: tuple[LoadBalancerSpec, ...]  # by id
    zone: int | None  # None: no load balancer
    lbs: tuple[LocalLoadBalancer, ...]
    floods: FloodGroups
    contents: tuple[GroupContent, ...]  # distinct
    local_ofports: frozenset[int]
    ids: dict[GroupContent, int]  # what `flows` point to
    flows: tuple[Flow, ...]


class DatapathComputer:
    """Computes the flows and groups of the datapath of `host_id`, one snapshot after the
    other, recomputing only what changed. Pure (no I/O, no clock); not thread-safe: one
    host agent owns it."""

    _config: DatapathConfig | None

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        self._reset()

    def compute(self, snapshot: Snapshot, view: DatapathView) -> DatapathConfig:
        """Every flow and group the integration bridge of `host_id` must hold. Returns the
        previous result itself when nothing it depends on changed."""
        try:
            with _gc_paused(self._snapshot is _EMPTY):  # a cold start: the whole snapshot
                self._refresh(snapshot, view)
                with _gc_paused(len(self._dirty) >= _MANY_NETWORKS):
                    self._examine()
                    if self._config is None or self._pending or self._stale:
                        self._apply()
                        self._config = self._assemble()
        except BaseException:
            self._reset()
            raise
        return self._config

    def affects(self, snapshot: Snapshot, view: DatapathView) -> bool:
        """Whether `compute` of this snapshot and view would give another result than the
        previous one. Builds no flow: what it finds is kept for `compute`."""
        try:
            self._refresh(snapshot, view)
            self._examine()
        except BaseException:
            self._reset()
            raise
        return self._config is None or bool(self._pending) or self._stale

    # ---- state ----------------------------------------------------------------------

    def _reset(self) -> None:
        self._snapshot: Snapshot = _EMPTY
        self._raw_ofports: dict[str, int] = {}
        self._ofports: dict[str, int] = {}
        self._paths = host_paths(_EMPTY, self.host_id, {})
        self._networks: dict[str, NetworkSpec] = {}
        self._metadata: dict[str, int] = {}
        self._bad_segments: dict[str, str] = {}  # network id -> why its segment is invalid
        self._segment_owners: dict[int, set[str]] = {}
        self._shared_segments: set[int] = set()  # metadata of more than one network
        self._ports: dict[str, dict[str, PortSpec]] = {}  # network id -> port id -> spec
        # interface -> network id -> ports bound here on it (plain dicts: a Counter costs
        # a microsecond to make, and a cold start makes one per local port)
        self._interface_networks: dict[str, dict[str, int]] = {}
        self._lb_specs: dict[str, dict[str, LoadBalancerSpec]] = {}  # network id -> lb id ->
        self._realized: dict[str, frozenset[str]] = {}  # by network id
        self._unrealized: dict[str, frozenset[str]] = {}
        self._dirty: set[str] = set()  # network ids whose inputs may have changed
        # network id -> new inputs (None: no unit any more), found by `_examine`
        self._pending: dict[str, tuple[LocalNetwork, tuple[LoadBalancerSpec, ...]] | None] = {}
        self._stale = False  # realized/unrealized ports changed
        self._lbs_changed = False  # a unit with load balancers was rebuilt or removed
        self._units: dict[str, _Unit] = {}
        self._unit_order: list[int] = []  # the units' metadata, sorted
        self._unit_list: list[_Unit] = []  # the units in that order
        self._zones: dict[int, int] = {}
        self._lb_metadatas: frozenset[int] = frozenset()
        self._ofport_units: Counter[int] = Counter()  # local ofport -> units using it
        self._shared_ofports = 0  # ofports used by more than one unit
        self._content_refs: Counter[GroupContent] = Counter()
        self._first_choice: dict[GroupContent, int] = {}
        self._first_choice_owners: dict[int, set[GroupContent]] = {}
        self._collisions = 0  # first-choice ids held by more than one content, or 0
        # The groups while no collision, by id; also as ids and groups in two parallel
        # sorted lists, kept sorted by insertion except while many units are rebuilt (then
        # None, sorted once at assembly: inserting 8,000 groups one by one cost 20 ms).
        self._groups: dict[int, Group] = {}
        self._group_ids: list[int] | None = []
        self._group_list: list[Group] = []
        self._group_tuple: tuple[Group, ...] | None = None  # of `_group_list`; None: changed
        self._salted_groups: tuple[Group, ...] | None = None  # the groups after a collision
        self._config = None

    # ---- what changed ---------------------------------------------------------------

    def _refresh(self, snapshot: Snapshot, view: DatapathView) -> None:
        if view.host_id != self.host_id:
            raise ValueError(f"a view of {view.host_id} given to the computer of {self.host_id}")
        old = self._snapshot
        ofports_changed = view.ofports != self._raw_ofports
        if snapshot is old and not ofports_changed:
            return
        if ofports_changed:
            before, after = self._ofports, switch_ports(view)
            for name in before.keys() | after.keys():
                if before.get(name) != after.get(name):
                    self._dirty.update(self._interface_networks.get(name, ()))
            self._raw_ofports, self._ofports = dict(view.ofports), after
        if ofports_changed or snapshot.hosts != old.hosts:
            paths = host_paths(snapshot, self.host_id, self._ofports)
            if paths != self._paths:
                self._paths = paths
                self._dirty.update(self._units)
        removed_nets, added_nets = _window(old.networks, snapshot.networks)
        for network in removed_nets:
            self._forget_network(network)
        for network in added_nets:
            self._learn_network(network)
        removed_ports, added_ports = _window(old.ports, snapshot.ports)
        for port in removed_ports:
            self._forget_port(port)
        for port in added_ports:
            self._learn_port(port)
        removed_lbs, added_lbs = _window(old.load_balancers, snapshot.load_balancers)
        for lb in removed_lbs:
            specs = self._lb_specs.get(lb.network_id, {})
            if specs.get(lb.id) == lb:
                del specs[lb.id]
            self._dirty.add(lb.network_id)
        for lb in added_lbs:
            self._lb_specs.setdefault(lb.network_id, {})[lb.id] = lb
            self._dirty.add(lb.network_id)
        self._snapshot = snapshot

    def _forget_network(self, network: NetworkSpec) -> None:
        if self._networks.get(network.id) != network:
            return
        del self._networks[network.id]
        self._bad_segments.pop(network.id, None)
        metadata = self._metadata.pop(network.id, None)
        if metadata is not None:
            owners = self._segment_owners[metadata]
            owners.discard(network.id)
            if len(owners) < 2:
                self._shared_segments.discard(metadata)
            if not owners:
                del self._segment_owners[metadata]
        self._dirty.add(network.id)

    def _learn_network(self, network: NetworkSpec) -> None:
        self._forget_network(self._networks.get(network.id, network))
        self._networks[network.id] = network
        self._dirty.add(network.id)
        try:
            metadata = network_metadata(network)
        except PipelineError as exc:
            self._bad_segments[network.id] = str(exc)
            return
        self._metadata[network.id] = metadata
        owners = self._segment_owners.setdefault(metadata, set())
        owners.add(network.id)
        if len(owners) > 1:
            self._shared_segments.add(metadata)

    def _forget_port(self, port: PortSpec) -> None:
        ports = self._ports.get(port.network_id)
        if ports is None or ports.get(port.id) != port:
            return
        del ports[port.id]
        if port.host_id == self.host_id and port.interface:
            self._interface_networks[port.interface][port.network_id] -= 1
        self._dirty.add(port.network_id)

    def _learn_port(self, port: PortSpec) -> None:
        ports = self._ports.setdefault(port.network_id, {})
        previous = ports.get(port.id)
        if previous is not None:
            self._forget_port(previous)
        ports[port.id] = port
        if port.host_id == self.host_id and port.interface:
            networks = self._interface_networks.setdefault(port.interface, {})
            networks[port.network_id] = networks.get(port.network_id, 0) + 1
        self._dirty.add(port.network_id)

    def _check_segments(self) -> None:
        for network_id in sorted(self._bad_segments):
            raise PipelineError(self._bad_segments[network_id])
        for metadata in sorted(self._shared_segments):
            first, second = sorted(self._segment_owners[metadata])[:2]
            network = self._networks[second]
            raise PipelineError(
                f"networks {first} and {second} share one segment "
                f"({network.type} {network.segmentation_id})"
            )

    def _examine(self) -> None:
        """Turn the dirty networks into pending units: those whose inputs really changed."""
        self._check_segments()
        here = self.host_id
        for network_id in list(self._dirty):
            spec = self._networks.get(network_id)
            realized: list[str] = []
            unrealized: list[str] = []
            bound: list[BoundPort] = []
            for port in self._ports.get(network_id, {}).values():
                if port.host_id is None:
                    continue
                ofport = None
                if port.host_id == here:
                    ofport = self._ofports.get(port.interface) if port.interface else None
                    if spec is None or ofport is None:
                        unrealized.append(port.id)  # no network: none of its flows exist
                    else:
                        realized.append(port.id)
                if spec is not None:
                    bound.append(bound_port(port, port.host_id, ofport))
            self._set_ports(self._realized, network_id, realized)
            self._set_ports(self._unrealized, network_id, unrealized)
            net = None
            if spec is not None:
                net = local_network(spec, self._metadata[network_id], bound, here)
            unit = self._units.get(network_id)
            if net is None:
                if unit is None:
                    self._pending.pop(network_id, None)
                else:
                    self._pending[network_id] = None
            else:
                specs = self._lb_specs.get(network_id)
                lb_specs = tuple(sorted(specs.values(), key=_LB_ID)) if specs else ()
                if (
                    unit is None
                    or unit.net != net
                    or unit.lb_specs != lb_specs
                    or unit.paths is not self._paths
                ):
                    self._pending[network_id] = (net, lb_specs)
                else:
                    self._pending.pop(network_id, None)
            self._dirty.discard(network_id)

    def _set_ports(self, where: dict[str, frozenset[str]], network_id: str, ids: list[str]) -> None:
        new = frozenset(ids)
        if where.get(network_id, frozenset()) != new:
            self._stale = True
            if new:
                where[network_id] = new
            else:
                del where[network_id]

    # ---- recompute ------------------------------------------------------------------

    def _apply(self) -> None:
        pending, self._pending = self._pending, {}
        lb_metadatas = set(self._lb_metadatas)
        for network_id, inputs in pending.items():
            old = self._units.get(network_id)
            if old is not None and old.lb_specs:
                lb_metadatas.discard(old.net.metadata)
            if inputs is not None and inputs[1]:
                lb_metadatas.add(inputs[0].metadata)
        if lb_metadatas != self._lb_metadatas:
            self._lb_metadatas = frozenset(lb_metadatas)
            self._zones = conntrack_zones(self._lb_metadatas)
            for network_id, unit in self._units.items():
                if unit.zone is not None and unit.zone != self._zones.get(unit.net.metadata):
                    pending.setdefault(network_id, (unit.net, unit.lb_specs))
        if len(pending) >= _MANY_NETWORKS:
            self._group_ids = None
        rebuilt: list[_Unit] = []
        for network_id, inputs in pending.items():
            old = self._units.pop(network_id, None)
            if old is not None:
                at = bisect_left(self._unit_order, old.net.metadata)
                del self._unit_order[at], self._unit_list[at]
                self._lbs_changed |= bool(old.lbs)
            if inputs is not None:
                unit = self._unit(*inputs)
                self._lbs_changed |= bool(unit.lbs)
                self._units[network_id] = unit
                at = bisect_left(self._unit_order, unit.net.metadata)
                self._unit_order.insert(at, unit.net.metadata)
                self._unit_list.insert(at, unit)
                self._acquire(unit)
                rebuilt.append(unit)
            if old is not None:  # after the new unit took its groups: unchanged ones stay
                self._release(old)
        ids: dict[GroupContent, int] = self._first_choice
        moved: list[_Unit] = []
        if self._collisions or self._salted_groups is not None:
            self._salted_groups = None
            if self._collisions:
                ids = assign_group_ids(self._content_refs)
                salted = [Group(i, content.type, content.buckets) for content, i in ids.items()]
                for group in salted:
                    check_group(group)
                self._salted_groups = tuple(sorted(salted, key=lambda g: g.group_id))
            moved = [
                unit
                for unit in self._units.values()
                if unit.flows and any(ids[c] != i for c, i in unit.ids.items())
            ]
        for unit in chain(rebuilt, moved):
            unit.ids = {content: ids[content] for content in unit.contents}
            # Its groups exist while the unit does (it holds a reference to each content),
            # so a flow pointing to another is a builder's bug.
            unit.flows = unique_flows(self._unit_flows(unit), group_ids=set(unit.ids.values()))

    def _unit(self, net: LocalNetwork, lb_specs: tuple[LoadBalancerSpec, ...]) -> _Unit:
        zone = self._zones[net.metadata] if lb_specs else None
        lbs = tuple(
            sorted(
                (local_load_balancer(spec, net, self._zones) for spec in lb_specs),
                key=load_balancer_order,
            )
        )
        floods = flood_groups(self._paths, net)
        contents = [*floods.contents(), *(backend_group(lb) for lb in lbs)]
        return _Unit(
            net=net,
            paths=self._paths,
            lb_specs=lb_specs,
            zone=zone,
            lbs=lbs,
            floods=floods,
            contents=tuple(dict.fromkeys(c for c in contents if c is not None)),
            local_ofports=frozenset(ofport_of(port) for port in net.local_ports),
            ids={},
            flows=(),
        )

    def _unit_flows(self, unit: _Unit) -> list[Flow]:
        net, paths = unit.net, unit.paths
        # Extended from each builder, not re-yielded: one generator less per flow.
        flows = [*classify_network_flows(paths, net)]
        flows += port_security_network_flows(net)
        flows += dhcp_network_flows(net)
        flows += arp_responder_network_flows(net)
        flows += nd_responder_network_flows(net)
        if unit.zone is not None:
            flows += load_balancer_network_flows(net, unit.zone)
            for lb in unit.lbs:
                flows += load_balancer_own_flows(lb, unit.ids, self.host_id)
        flows += l2_unicast_flows(paths, net)
        flows += l2_flood_flows(net, unit.floods, unit.ids)
        return flows

    def _acquire(self, unit: _Unit) -> None:
        for ofport in unit.local_ofports:
            self._ofport_units[ofport] += 1
            if self._ofport_units[ofport] == 2:
                self._shared_ofports += 1
        for content in unit.contents:
            self._content_refs[content] += 1
            if self._content_refs[content] > 1:
                continue
            first = first_choice_id(content)
            self._first_choice[content] = first
            owners = self._first_choice_owners.setdefault(first, set())
            owners.add(content)
            if first == 0 or len(owners) == 2:
                self._collisions += 1
            if first != 0 and len(owners) == 1:
                group = Group(first, content.type, content.buckets)
                check_group(group)
                self._put_group(group)

    def _release(self, unit: _Unit) -> None:
        for ofport in unit.local_ofports:
            if self._ofport_units[ofport] == 2:
                self._shared_ofports -= 1
            self._ofport_units[ofport] -= 1
        for content in unit.contents:
            self._content_refs[content] -= 1
            if self._content_refs[content]:
                continue
            del self._content_refs[content]
            first = self._first_choice.pop(content)
            owners = self._first_choice_owners[first]
            owners.discard(content)
            if first == 0 or len(owners) == 1:
                self._collisions -= 1
            if first != 0 and len(owners) == 1:  # the one left gets its first choice back
                (other,) = owners
                group = Group(first, other.type, other.buckets)
                check_group(group)
                self._put_group(group)
            elif first != 0 and not owners:
                del self._groups[first]
                self._group_tuple = None
                if self._group_ids is not None:
                    at = bisect_left(self._group_ids, first)
                    del self._group_ids[at], self._group_list[at]
            if not owners:
                del self._first_choice_owners[first]

    def _put_group(self, group: Group) -> None:
        group_id = group.group_id
        known = group_id in self._groups
        self._groups[group_id] = group
        self._group_tuple = None
        if self._group_ids is None:  # sorted at assembly
            return
        at = bisect_left(self._group_ids, group_id)
        if known:
            self._group_list[at] = group
        else:
            self._group_ids.insert(at, group_id)
            self._group_list.insert(at, group)

    # ---- the result -----------------------------------------------------------------

    def _assemble(self) -> DatapathConfig:
        previous = self._config
        if self._group_tuple is None:
            if self._group_ids is None:
                self._group_ids = sorted(self._groups)
                self._group_list = [self._groups[group_id] for group_id in self._group_ids]
            self._group_tuple = tuple(self._group_list)
        groups = self._group_tuple if self._salted_groups is None else self._salted_groups
        flows = FlowSequence((_TABLE_MISS, *map(_FLOWS, self._unit_list)))
        if self._shared_ofports:  # two local ports on one ofport
            flows = FlowSequence((unique_flows(list(flows), check=False),))
        if previous is not None and not self._stale:
            realized, unrealized = previous.realized_ports, previous.unrealized_ports
        else:
            realized = frozenset(chain.from_iterable(self._realized.values()))
            unrealized = frozenset(chain.from_iterable(self._unrealized.values()))
        self._stale = False
        if previous is not None and not self._lbs_changed:
            udp = previous.udp_backends
        else:
            udp = udp_backends(chain.from_iterable(unit.lbs for unit in self._unit_list))
        self._lbs_changed = False
        return DatapathConfig(
            flows=flows,
            groups=groups,
            realized_ports=realized,
            unrealized_ports=unrealized,
            udp_backends=udp,
        )
