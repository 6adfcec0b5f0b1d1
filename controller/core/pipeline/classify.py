"""Table classify: which port and network a frame comes from.

A VM port's frames must come untagged from its own MAC; the uplink's must carry
a known VLAN, a tunnel's a known VNI. The frame gets its network's metadata and
its origin (REG_ORIGIN). Remote frames skip port security and the ARP responder:
they go straight to the lb table, where a load balancer's replies are un-NATed.
Anything else falls to the table miss and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from controller.core.flows import (
    VLAN_NONE,
    VLAN_PRESENT,
    Action,
    Flow,
    Match,
    MatchField,
    PopVlan,
    SetField,
    match,
)
from controller.core.pipeline.context import DatapathContext, LocalNetwork, ofport_of
from controller.core.pipeline.paths import ingress_ofports
from controller.core.pipeline.tables import (
    ORIGIN_LOCAL,
    ORIGIN_REMOTE,
    REG_ORIGIN,
    TABLE_CLASSIFY,
    TABLE_LB,
    TABLE_PORT_SECURITY,
)

__all__ = ["classify_flows", "classify_network_flows"]

METADATA_MASK: Final = (1 << 64) - 1
PRIORITY_PORT: Final = 100  # a known port / VLAN / VNI

_UNTAGGED: Final = MatchField("vlan_vid", VLAN_NONE)
_LOCAL_ORIGIN: Final[tuple[Action, ...]] = (SetField(REG_ORIGIN, ORIGIN_LOCAL),)


def classify_flows(ctx: DatapathContext) -> Iterator[Flow]:
    for net in ctx.networks:
        yield from classify_network_flows(ctx, net)


def classify_network_flows(ctx: DatapathContext, net: LocalNetwork) -> Iterator[Flow]:
    """The flows of one network; of `ctx` only the paths to other hosts are read."""
    write_metadata = (net.metadata, METADATA_MASK)
    for port in net.local_ports:
        yield Flow(
            TABLE_CLASSIFY,
            PRIORITY_PORT,
            # Fields in name order, as `match()` gives them.
            Match(
                (MatchField("eth_src", port.mac), MatchField("in_port", ofport_of(port)), _UNTAGGED)
            ),
            _LOCAL_ORIGIN,
            TABLE_PORT_SECURITY,
            write_metadata,
        )
    for ofport in ingress_ofports(ctx, net):
        if net.spec.type == "vlan":
            segment = match(in_port=ofport, vlan_vid=VLAN_PRESENT | net.spec.segmentation_id)
            entry: tuple[Action, ...] = (PopVlan(), SetField(REG_ORIGIN, ORIGIN_REMOTE))
        else:
            segment = match(in_port=ofport, tunnel_id=net.spec.segmentation_id)
            entry = (SetField(REG_ORIGIN, ORIGIN_REMOTE),)
        yield Flow(
            TABLE_CLASSIFY,
            PRIORITY_PORT,
            segment,
            actions=entry,
            goto_table=TABLE_LB,
            write_metadata=write_metadata,
        )
