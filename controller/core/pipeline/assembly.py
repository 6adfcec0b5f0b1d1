"""Every flow and group one host's integration bridge must hold: a pure function.

`compute_datapath(snapshot, view)` reads no socket, clock or database and uses
no randomness; equal inputs give equal outputs, in a canonical order, whatever
the order of the snapshot's tuples.

A frame walks these tables (declared, with their misses, in `tables`), each
built by the module of the same name:

    classify       which port/network it comes from; anything unknown is dropped
    port_security  a local VM may only use its own MAC and IPs
    arp_responder  ARP requests for known IPs are answered by the switch itself
    lb             L4 load balancer (`load_balancer`): VIP connections and backend
                   replies through conntrack (lb_ct, lb_rewrite, lb_reply), health
                   probe replies to the controller; everything else straight through
    l2_forward     unicast to the owner of eth_dst, flood groups otherwise
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.core.flows import Flow, Group, GroupAction
from controller.core.model import DatapathView, Snapshot
from controller.core.pipeline.arp_responder import arp_responder_flows
from controller.core.pipeline.classify import classify_flows
from controller.core.pipeline.context import build_context
from controller.core.pipeline.groups import assign_group_ids
from controller.core.pipeline.l2_forward import flood_groups, l2_forward_flows
from controller.core.pipeline.load_balancer import load_balancer_flows, load_balancer_groups
from controller.core.pipeline.port_security import port_security_flows
from controller.core.pipeline.tables import (
    PipelineError,
    check_flow,
    check_group,
    table_miss_flows,
)

__all__ = ["DatapathConfig", "compute_datapath"]


@dataclass(frozen=True, slots=True)
class DatapathConfig:
    flows: tuple[Flow, ...]
    groups: tuple[Group, ...]
    realized_ports: frozenset[str]  # bound here with an ofport: their flows are in `flows`
    unrealized_ports: frozenset[str]  # bound here, interface not (yet) on the switch


_FlowKey = tuple[int, int, tuple[tuple[str, int, int], ...]]


def _flow_key(flow: Flow) -> _FlowKey:
    fields = tuple((f.name, f.value, -1 if f.mask is None else f.mask) for f in flow.match.fields)
    return (flow.table, -flow.priority, fields)


def _canonical_flows(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    """Check every flow, drop exact duplicates, refuse two different flows for one match."""
    by_key: dict[_FlowKey, Flow] = {}
    for flow in flows:
        check_flow(flow)
        key = _flow_key(flow)
        previous = by_key.setdefault(key, flow)
        if previous != flow:
            raise PipelineError(f"two flows for one match: {previous!r} and {flow!r}")
    return tuple(by_key[key] for key in sorted(by_key))


def _referenced_groups(flows: Iterable[Flow]) -> set[int]:
    return {a.group_id for f in flows for a in f.actions if isinstance(a, GroupAction)}


def compute_datapath(snapshot: Snapshot, view: DatapathView) -> DatapathConfig:
    """Every flow and group the integration bridge of `view.host_id` must hold."""
    ctx = build_context(snapshot, view)
    floods = {net.metadata: flood_groups(ctx, net) for net in ctx.networks}
    group_ids = assign_group_ids(
        [
            *load_balancer_groups(snapshot, ctx),
            *(content for flood in floods.values() for content in flood.contents()),
        ]
    )
    flows = _canonical_flows(
        [
            *table_miss_flows(),
            *classify_flows(ctx),
            *port_security_flows(ctx),
            *arp_responder_flows(ctx),
            *load_balancer_flows(snapshot, ctx, group_ids),
            *l2_forward_flows(ctx, floods, group_ids),
        ]
    )
    groups = tuple(
        sorted(
            (
                Group(group_id, content.type, content.buckets)
                for content, group_id in group_ids.items()
            ),
            key=lambda g: g.group_id,
        )
    )
    for group in groups:
        check_group(group)
    dangling = _referenced_groups(flows) - {g.group_id for g in groups}
    if dangling:
        raise PipelineError(f"flows point to groups that do not exist: {sorted(dangling)}")
    return DatapathConfig(
        flows=flows,
        groups=groups,
        realized_ports=ctx.realized_ports,
        unrealized_ports=ctx.unrealized_ports,
    )
