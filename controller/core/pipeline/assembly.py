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
from operator import attrgetter
from typing import Final

from controller.core.flows import Flow
from controller.core.model import DatapathView, Snapshot
from controller.core.pipeline.engine import DatapathComputer, DatapathConfig

__all__ = ["DatapathComputer", "DatapathConfig", "canonical_flows", "compute_datapath"]


_TABLE: Final = attrgetter("table")
_PRIORITY: Final = attrgetter("priority")


def canonical_flows(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    """`flows`, given in the computer's canonical order (by network, then as each feature
    builds them), by table and descending priority, the computer's order kept within."""
    # Two stable sorts on keys read in C (descending keeps equal keys in order too): a
    # third cheaper than one sort on a key computed in Python per flow.
    ordered = sorted(flows, key=_PRIORITY, reverse=True)
    ordered.sort(key=_TABLE)
    return tuple(ordered)


def compute_datapath(snapshot: Snapshot, view: DatapathView) -> DatapathConfig:
    """Every flow and group the integration bridge of `view.host_id` must hold. (That
    no flow points to a group missing from the result is checked as each network's
    flows are built: `engine.unique_flows`.)"""
    config = DatapathComputer(view.host_id).compute(snapshot, view)
    return dataclasses.replace(config, flows=canonical_flows(config.flows))
