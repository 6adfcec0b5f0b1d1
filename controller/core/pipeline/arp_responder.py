"""Table arp_responder: ARP requests for known IPs are answered by the switch itself.

Every bound port's addresses (on any host) are answered for, within the asker's
network; other frames, and requests nobody here can answer, continue to lb.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from controller.core.flows import (
    ARP_REPLY,
    ARP_REQUEST,
    ETH_TYPE_ARP,
    OFPP_IN_PORT,
    Action,
    Flow,
    Match,
    MatchField,
    Output,
    RegMove,
    SetField,
)
from controller.core.pipeline.context import DatapathContext, LocalNetwork
from controller.core.pipeline.tables import TABLE_ARP_RESPONDER, TABLE_LB

__all__ = ["arp_reply_actions", "arp_responder_flows", "arp_responder_network_flows"]

PRIORITY_OWN_ADDRESS: Final = 200  # a port asking for its own IP
PRIORITY_ARP_ANSWER: Final = 100


# The parts of an ARP reply that do not depend on who answers, shared by every reply.
_SWAP_ETH: Final = RegMove("eth_src", "eth_dst", 48)
_REPLY_OP: Final = SetField("arp_op", ARP_REPLY)
_SWAP_SHA: Final = RegMove("arp_sha", "arp_tha", 48)
_SWAP_SPA: Final = RegMove("arp_spa", "arp_tpa", 32)
_BACK: Final = Output(OFPP_IN_PORT)
_ARP_TYPE: Final = MatchField("eth_type", ETH_TYPE_ARP)
_REQUEST: Final = MatchField("arp_op", ARP_REQUEST)


def arp_reply_actions(owner_mac: int, owner_ip: int) -> tuple[Action, ...]:
    """Turn the ARP request in place into the owner's reply and send it back."""
    return (
        _SWAP_ETH,
        SetField("eth_src", owner_mac),
        _REPLY_OP,
        _SWAP_SHA,
        SetField("arp_sha", owner_mac),
        _SWAP_SPA,
        SetField("arp_spa", owner_ip),
        _BACK,
    )


def arp_responder_flows(ctx: DatapathContext) -> Iterator[Flow]:
    for net in ctx.networks:
        yield from arp_responder_network_flows(net)


def arp_responder_network_flows(net: LocalNetwork) -> Iterator[Flow]:
    # Matches are built with their fields in name order (what `match()` gives) and
    # share their constant fields, flows with positional arguments: these are most of a
    # datapath's flows.
    metadata = MatchField("metadata", net.metadata)
    for owner in net.bound_ports:
        if not owner.ipv4s:
            continue
        set_eth_src = SetField("eth_src", owner.mac)
        set_arp_sha = SetField("arp_sha", owner.mac)
        for ip in owner.ipv4s:
            # `arp_reply_actions` inlined (a call per answer), the owner's parts shared
            yield Flow(
                TABLE_ARP_RESPONDER,
                PRIORITY_ARP_ANSWER,
                Match((_REQUEST, MatchField("arp_tpa", ip), _ARP_TYPE, metadata)),
                (
                    _SWAP_ETH,
                    set_eth_src,
                    _REPLY_OP,
                    _SWAP_SHA,
                    set_arp_sha,
                    _SWAP_SPA,
                    SetField("arp_spa", ip),
                    _BACK,
                ),
            )
    # A port asking for its own address probes for a duplicate or announces
    # itself (gratuitous ARP): the network must see it, not the switch answer it.
    for port in net.local_ports:
        eth_src = MatchField("eth_src", port.mac)
        for ip in port.ipv4s:
            yield Flow(
                TABLE_ARP_RESPONDER,
                PRIORITY_OWN_ADDRESS,
                Match((_REQUEST, MatchField("arp_tpa", ip), eth_src, _ARP_TYPE, metadata)),
                (),
                TABLE_LB,
            )
