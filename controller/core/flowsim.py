"""A small OpenFlow 1.3 evaluator: which copies of a packet leave the switch, where, and how.

Pure: the tests check the pipeline with it, and the connectivity diagnosis
(`controller.core.diagnosis`) evaluates its synthetic packet with it.

Give it flows and groups (e.g. a `DatapathConfig`) and a packet as a dict of
header fields named as in `controller.core.flows.FIELD_BITS`; it returns every
emitted copy with its output port and headers. Semantics modelled:

- per table, the highest-priority matching flow (masks honoured); two matching
  flows of equal priority are an error (OpenFlow leaves the choice undefined);
  no match is a drop;
- instructions in OpenFlow order: apply-actions, write-metadata (masked), goto;
- actions in list order: output (OFPP_IN_PORT -> the ingress port; a plain
  output to the ingress port is suppressed, as switches do), group, push/pop
  VLAN, set_field, reg_move, resubmit (runs the table and comes back), ct;
- groups: `all` runs every bucket on its own copy, `select` runs every bucket
  too (each emission records the bucket weights it went through, so tests can
  check the weights instead of sampling), `indirect` its one bucket;
- ct: the verdict comes from a `CtModel` the test provides. With `table`, the
  packet forks: the original continues untracked, a copy (NAT applied, ct_state
  and ct_zone set) recirculates to `table`. Without `table`, NAT applies to the
  packet itself. Every ct call is recorded in `CtCall`s for assertions.

Field defaults follow OpenFlow: an absent field is 0 (untagged, untracked,
metadata and registers clear). Unknown field names are rejected so a typo in a
test cannot make it pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.core import flows as flowlib

Headers = dict[str, int]


class SimulationError(Exception):
    """The flows did something a switch would refuse, or this model does not cover."""


@dataclass(frozen=True)
class Emitted:
    port: int
    headers: Mapping[str, int]
    select_weights: tuple[int, ...] = ()  # weights of the select buckets this copy took

    def get(self, name: str) -> int:
        return self.headers.get(name, 0)


@dataclass(frozen=True)
class CtVerdict:
    state: int
    rewrite: Mapping[str, int] = field(default_factory=dict)  # e.g. un-NAT of a reply


CtModel = Callable[[Mapping[str, int], flowlib.Ct], CtVerdict]


def new_connection(headers: Mapping[str, int], ct: flowlib.Ct) -> CtVerdict:
    """Default conntrack model: every packet starts a new connection."""
    return CtVerdict(flowlib.CT_TRACKED | flowlib.CT_NEW)


def fixed_state(state: int, **rewrite: int) -> CtModel:
    """A conntrack model answering every packet with `state` (and header rewrites)."""

    def model(headers: Mapping[str, int], ct: flowlib.Ct) -> CtVerdict:
        return CtVerdict(state, dict(rewrite))

    return model


@dataclass(frozen=True)
class CtCall:
    ct: flowlib.Ct
    headers: Mapping[str, int]  # the packet as it entered conntrack


class HasFlowsAndGroups(Protocol):
    @property
    def flows(self) -> tuple[flowlib.Flow, ...]: ...

    @property
    def groups(self) -> tuple[flowlib.Group, ...]: ...


@dataclass
class Run:
    emitted: list[Emitted] = field(default_factory=list)
    trace: list[flowlib.Flow] = field(default_factory=list)  # every flow hit, in order
    ct_calls: list[CtCall] = field(default_factory=list)
    steps: int = 0
    depth: int = 0


_MAX_STEPS = 10_000
_MAX_DEPTH = 64  # OVS's own limit on nested resubmits


class FlowSimulator:
    def __init__(
        self,
        flows: Iterable[flowlib.Flow],
        groups: Iterable[flowlib.Group] = (),
        *,
        ct_model: CtModel = new_connection,
    ) -> None:
        self._tables: dict[int, list[flowlib.Flow]] = {}
        for flow in flows:
            self._tables.setdefault(flow.table, []).append(flow)
        for table in self._tables.values():
            table.sort(key=lambda f: -f.priority)
        self._groups: dict[int, flowlib.Group] = {}
        for group in groups:
            if group.group_id in self._groups:
                raise SimulationError(f"group id {group.group_id} defined twice")
            self._groups[group.group_id] = group
        self._ct_model = ct_model

    @classmethod
    def of(cls, config: HasFlowsAndGroups, *, ct_model: CtModel = new_connection) -> FlowSimulator:
        return cls(config.flows, config.groups, ct_model=ct_model)

    def run(self, packet: Mapping[str, int], *, table: int = 0) -> Run:
        headers = _checked_packet(packet)
        run = Run()
        self._run_table(table, headers, run, ())
        return run

    def emitted(self, packet: Mapping[str, int], *, table: int = 0) -> list[Emitted]:
        return self.run(packet, table=table).emitted

    # ---- evaluation -------------------------------------------------------------------------

    def lookup(self, table: int, headers: Mapping[str, int]) -> flowlib.Flow | None:
        best: flowlib.Flow | None = None
        for flow in self._tables.get(table, ()):
            if best is not None and flow.priority < best.priority:
                break
            if _matches(flow, headers):
                if best is not None:
                    raise SimulationError(f"ambiguous: {best!r} and {flow!r} both match {headers}")
                best = flow
        return best

    def _run_table(self, table: int, headers: Headers, run: Run, weights: tuple[int, ...]) -> None:
        run.steps += 1
        if run.steps > _MAX_STEPS or run.depth >= _MAX_DEPTH:
            raise SimulationError("too many table lookups: a resubmit/recirculation loop?")
        flow = self.lookup(table, headers)
        if flow is None:
            return
        run.trace.append(flow)
        run.depth += 1
        try:
            self._apply(flow.actions, headers, run, weights)
            if flow.write_metadata is not None:
                value, mask = flow.write_metadata
                headers["metadata"] = (headers.get("metadata", 0) & ~mask) | (value & mask)
            if flow.goto_table is not None:
                if flow.goto_table <= table:
                    raise SimulationError(f"goto_table must move forward: {flow!r}")
                self._run_table(flow.goto_table, headers, run, weights)
        finally:
            run.depth -= 1

    def _apply(
        self,
        actions: Iterable[flowlib.Action],
        headers: Headers,
        run: Run,
        weights: tuple[int, ...],
    ) -> None:
        for action in actions:
            if isinstance(action, flowlib.Output):
                self._output(action.port, headers, run, weights)
            elif isinstance(action, flowlib.GroupAction):
                self._group(action.group_id, headers, run, weights)
            elif isinstance(action, flowlib.PushVlan):
                if headers.get("vlan_vid", flowlib.VLAN_NONE) & flowlib.VLAN_PRESENT:
                    raise SimulationError("push_vlan on a tagged frame: QinQ is not modelled")
                headers["vlan_vid"] = flowlib.VLAN_PRESENT  # a new outermost tag starts with VID 0
            elif isinstance(action, flowlib.PopVlan):
                if not headers.get("vlan_vid", flowlib.VLAN_NONE) & flowlib.VLAN_PRESENT:
                    raise SimulationError("pop_vlan on an untagged frame")
                headers["vlan_vid"] = flowlib.VLAN_NONE
            elif isinstance(action, flowlib.SetField):
                _set_field(headers, action)
            elif isinstance(action, flowlib.RegMove):
                _reg_move(headers, action)
            elif isinstance(action, flowlib.Multipath):
                _multipath(headers, action)
            elif isinstance(action, flowlib.Resubmit):
                self._run_table(action.table, headers, run, weights)
            elif isinstance(action, flowlib.Ct):
                self._conntrack(action, headers, run, weights)
            else:
                raise SimulationError(f"action not modelled: {action!r}")

    def _output(self, port: int, headers: Headers, run: Run, weights: tuple[int, ...]) -> None:
        in_port = headers["in_port"]
        if port == flowlib.OFPP_IN_PORT:
            port = in_port
        elif port == in_port:
            return
        elif port == flowlib.OFPP_ALL:
            raise SimulationError("output to OFPP_ALL is not modelled")
        run.emitted.append(Emitted(port, dict(headers), weights))

    def _group(self, group_id: int, headers: Headers, run: Run, weights: tuple[int, ...]) -> None:
        group = self._groups.get(group_id)
        if group is None:
            raise SimulationError(f"no group {group_id}")
        if group.type == "indirect" and len(group.buckets) != 1:
            raise SimulationError(f"indirect group {group_id} needs exactly one bucket")
        if group.type not in ("all", "select", "indirect"):
            raise SimulationError(f"group type {group.type!r} not modelled")
        for bucket in group.buckets:
            taken = (*weights, bucket.weight) if group.type == "select" else weights
            self._apply(bucket.actions, dict(headers), run, taken)

    def _conntrack(
        self, ct: flowlib.Ct, headers: Headers, run: Run, weights: tuple[int, ...]
    ) -> None:
        run.ct_calls.append(CtCall(ct, dict(headers)))
        verdict = self._ct_model(dict(headers), ct)
        tracked = headers if ct.table is None else dict(headers)
        if ct.nat is not None and ct.nat.dst_ip is not None:
            tracked["ipv4_dst"] = ct.nat.dst_ip
            if ct.nat.dst_port is not None:
                _set_l4_dst(tracked, ct.nat.dst_port)
        for name, value in verdict.rewrite.items():
            _check_value(name, value)
            tracked[name] = value
        if ct.table is None:
            return  # OVS leaves ct_state unset on a packet that does not recirculate
        tracked["ct_state"] = verdict.state
        tracked["ct_zone"] = ct.zone
        self._run_table(ct.table, tracked, run, weights)


def simulate(
    config: HasFlowsAndGroups, packet: Mapping[str, int], *, ct_model: CtModel = new_connection
) -> list[Emitted]:
    """The copies of `packet` that `config` sends out, in emission order."""
    return FlowSimulator.of(config, ct_model=ct_model).emitted(packet)


# ---- field helpers ----------------------------------------------------------------------------


def _check_value(name: str, value: int) -> None:
    bits = flowlib.FIELD_BITS.get(name)
    if bits is None:
        raise SimulationError(f"unknown field {name!r}")
    if not 0 <= value < (1 << bits):
        raise SimulationError(f"{name}={value:#x} does not fit {bits} bits")


def _checked_packet(packet: Mapping[str, int]) -> Headers:
    if "in_port" not in packet:
        raise SimulationError("a packet needs an in_port")
    for name, value in packet.items():
        _check_value(name, value)
    return dict(packet)


def _matches(flow: flowlib.Flow, headers: Mapping[str, int]) -> bool:
    for f in flow.match.fields:
        value = headers.get(f.name, 0)
        if f.mask is not None:
            value &= f.mask
        if value != f.value:
            return False
    return True


def _set_field(headers: Headers, action: flowlib.SetField) -> None:
    _check_value(action.field, action.value)
    if action.field == "vlan_vid":
        if not headers.get("vlan_vid", flowlib.VLAN_NONE) & flowlib.VLAN_PRESENT:
            raise SimulationError("set_field vlan_vid on an untagged frame")
        if not action.value & flowlib.VLAN_PRESENT:
            raise SimulationError("set_field vlan_vid needs VLAN_PRESENT in its value")
    headers[action.field] = action.value


def _set_l4_dst(headers: Headers, port: int) -> None:
    proto = headers.get("ip_proto")
    if proto == flowlib.IP_PROTO_TCP:
        headers["tcp_dst"] = port
    elif proto == flowlib.IP_PROTO_UDP:
        headers["udp_dst"] = port
    else:
        raise SimulationError(f"NAT to a port needs TCP or UDP, not ip_proto={proto}")


def _multipath(headers: Headers, action: flowlib.Multipath) -> None:
    """A link number from a symmetric hash of the addresses and TCP/UDP ports, as OVS's
    symmetric_l3l4+udp does (the hash function differs; what is hashed does not)."""
    bits = flowlib.FIELD_BITS.get(action.dst)
    if bits is None or action.n_bits > bits or not 0 < action.n_links <= 1 << action.n_bits:
        raise SimulationError(f"bad multipath {action!r}")
    proto = headers.get("ip_proto", 0)
    prefix = {flowlib.IP_PROTO_TCP: "tcp", flowlib.IP_PROTO_UDP: "udp"}.get(proto)

    def port(side: str) -> int:
        return headers.get(f"{prefix}_{side}", 0) if prefix else 0

    source = (headers.get("ipv4_src", 0), port("src"))
    destination = (headers.get("ipv4_dst", 0), port("dst"))
    pair = sorted([source, destination])
    digest = hashlib.blake2b(repr((pair, proto, action.basis)).encode(), digest_size=4)
    link = int.from_bytes(digest.digest(), "big") % action.n_links
    mask = (1 << action.n_bits) - 1
    headers[action.dst] = (headers.get(action.dst, 0) & ~mask) | link


def _reg_move(headers: Headers, action: flowlib.RegMove) -> None:
    for name, ofs in ((action.src, action.src_ofs), (action.dst, action.dst_ofs)):
        bits = flowlib.FIELD_BITS.get(name)
        if bits is None:
            raise SimulationError(f"unknown field {name!r} in {action!r}")
        if action.n_bits <= 0 or ofs < 0 or ofs + action.n_bits > bits:
            raise SimulationError(f"bits out of range in {action!r}")
    width = (1 << action.n_bits) - 1
    moved = (headers.get(action.src, 0) >> action.src_ofs) & width
    kept = headers.get(action.dst, 0) & ~(width << action.dst_ofs)
    headers[action.dst] = kept | (moved << action.dst_ofs)
