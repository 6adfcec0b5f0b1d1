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
    Output,
    RegMove,
    SetField,
    match,
)
from controller.core.pipeline.context import DatapathContext
from controller.core.pipeline.tables import TABLE_ARP_RESPONDER, TABLE_LB

__all__ = ["arp_reply_actions", "arp_responder_flows"]

PRIORITY_OWN_ADDRESS: Final = 200  # a port asking for its own IP
PRIORITY_ARP_ANSWER: Final = 100


def arp_reply_actions(owner_mac: int, owner_ip: int) -> tuple[Action, ...]:
    """Turn the ARP request in place into the owner's reply and send it back."""
    return (
        RegMove("eth_src", "eth_dst", 48),
        SetField("eth_src", owner_mac),
        SetField("arp_op", ARP_REPLY),
        RegMove("arp_sha", "arp_tha", 48),
        SetField("arp_sha", owner_mac),
        RegMove("arp_spa", "arp_tpa", 32),
        SetField("arp_spa", owner_ip),
        Output(OFPP_IN_PORT),
    )


def arp_responder_flows(ctx: DatapathContext) -> Iterator[Flow]:
    for net in ctx.networks:
        for owner in net.bound_ports:
            for ip in owner.ipv4s:
                yield Flow(
                    TABLE_ARP_RESPONDER,
                    PRIORITY_ARP_ANSWER,
                    match(
                        metadata=net.metadata, eth_type=ETH_TYPE_ARP, arp_op=ARP_REQUEST, arp_tpa=ip
                    ),
                    actions=arp_reply_actions(owner.mac, ip),
                )
        # A port asking for its own address probes for a duplicate or announces
        # itself (gratuitous ARP): the network must see it, not the switch answer it.
        for port in net.local_ports:
            for ip in port.ipv4s:
                yield Flow(
                    TABLE_ARP_RESPONDER,
                    PRIORITY_OWN_ADDRESS,
                    match(
                        metadata=net.metadata,
                        eth_src=port.mac,
                        eth_type=ETH_TYPE_ARP,
                        arp_op=ARP_REQUEST,
                        arp_tpa=ip,
                    ),
                    goto_table=TABLE_LB,
                )
