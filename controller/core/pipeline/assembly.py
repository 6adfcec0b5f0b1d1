"""Every flow and group one host's integration bridge must hold: a pure function.

`compute_datapath(snapshot, view)` reads no socket, clock or database and uses
no randomness; equal inputs give equal outputs, in a canonical order, whatever
the order of the snapshot's tuples. It is a fresh `engine.DatapathComputer`'s
result, sorted; a host agent keeps one computer and feeds it snapshot after
snapshot instead, so only what changed is recomputed.

A frame walks these tables (declared, with their misses, in `tables`), each
built by the module of the same name:

    classify       which port/network it comes from; anything unknown is dropped
    port_security  a local VM may only use its own MAC and IPs; its DHCP goes to dhcp
    dhcp           DHCP client messages of served ports to the controller, others dropped
    arp_responder  ARP requests and IPv6 Neighbor Solicitations (`nd_responder`) for
                   known IPs are answered by the switch itself (an NA finished in nd_reply)
    lb             L4 load balancer (`load_balancer`): VIP connections and backend
                   replies through conntrack (lb_ct, lb_rewrite, lb_reply), health
                   probe replies to the controller; everything else straight through
    l2_forward     unicast to the owner of eth_dst, flood groups otherwise
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from controller.core.flows import Flow, GroupAction
from controller.core.model import DatapathView, Snapshot
from controller.core.pipeline.engine import DatapathComputer, DatapathConfig
from controller.core.pipeline.tables import PipelineError

__all__ = ["DatapathComputer", "DatapathConfig", "canonical_flows", "compute_datapath"]


def _table_then_priority(flow: Flow) -> int:
    return flow.table << 16 | (0xFFFF - flow.priority)


def canonical_flows(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    """`flows`, given in the computer's canonical order (by network, then as each feature
    builds them), by table and descending priority, the computer's order kept within."""
    return tuple(sorted(flows, key=_table_then_priority))


def _referenced_groups(flows: Iterable[Flow]) -> set[int]:
    return {a.group_id for f in flows for a in f.actions if isinstance(a, GroupAction)}


def compute_datapath(snapshot: Snapshot, view: DatapathView) -> DatapathConfig:
    """Every flow and group the integration bridge of `view.host_id` must hold."""
    config = DatapathComputer(view.host_id).compute(snapshot, view)
    dangling = _referenced_groups(config.flows) - {g.group_id for g in config.groups}
    if dangling:
        raise PipelineError(f"flows point to groups that do not exist: {sorted(dangling)}")
    return dataclasses.replace(config, flows=canonical_flows(config.flows))
