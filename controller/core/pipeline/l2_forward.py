"""Table l2_forward: unicast to the owner of eth_dst, flood groups otherwise.

Forwarding is proactive: the controller knows every port's MAC and host, so
nothing is learned. A frame for a port on another host leaves by the network's
path toward that host; broadcast, multicast and unknown unicast go to the
network's flood group. Frames from other hosts are never sent back to the uplink
or a tunnel (split horizon), so they have flood groups of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from controller.core.flows import (
    MULTICAST_BIT,
    Action,
    Bucket,
    Flow,
    GroupAction,
    Match,
    MatchField,
    Output,
    match,
)
from controller.core.pipeline.context import DatapathContext, LocalNetwork, ofport_of
from controller.core.pipeline.groups import GroupContent
from controller.core.pipeline.paths import egress_toward, flood_egress, ingress_ofports
from controller.core.pipeline.tables import (
    ORIGIN_LOCAL,
    ORIGIN_REMOTE,
    REG_ORIGIN,
    TABLE_L2_FORWARD,
)

__all__ = ["FloodGroups", "flood_groups", "l2_flood_flows", "l2_forward_flows", "l2_unicast_flows"]

PRIORITY_UNICAST: Final = 100
PRIORITY_FLOOD: Final = 50  # broadcast / multicast
PRIORITY_UNKNOWN_UNICAST: Final = 10

_FROM_LOCAL: Final = MatchField(REG_ORIGIN, ORIGIN_LOCAL)
_FROM_REMOTE: Final = MatchField(REG_ORIGIN, ORIGIN_REMOTE)
_MULTICAST: Final = match(eth_dst=(MULTICAST_BIT, MULTICAST_BIT)).fields[0]


@dataclass(frozen=True, slots=True)
class FloodGroups:
    from_local: GroupContent  # other local ports + the ways to other hosts
    from_remote: GroupContent | None  # local ports only; None: nothing arrives from remote

    def contents(self) -> tuple[GroupContent, ...]:
        return (
            (self.from_local,) if self.from_remote is None else (self.from_local, self.from_remote)
        )


def flood_groups(ctx: DatapathContext, net: LocalNetwork) -> FloodGroups:
    # Output to the frame's own in_port is dropped by OpenFlow, so one group
    # serves every local sender.
    local = [Bucket((Output(ofport_of(port)),)) for port in net.local_ports]
    remote = [Bucket(actions) for actions in flood_egress(ctx, net)]
    from_remote = GroupContent("all", tuple(local)) if ingress_ofports(ctx, net) else None
    return FloodGroups(GroupContent("all", tuple(local + remote)), from_remote)


def l2_forward_flows(
    ctx: DatapathContext, floods: Mapping[int, FloodGroups], group_ids: Mapping[GroupContent, int]
) -> Iterator[Flow]:
    """The flows of `ctx`'s networks; `floods` by network metadata."""
    for net in ctx.networks:
        yield from l2_unicast_flows(ctx, net)
        yield from l2_flood_flows(net, floods[net.metadata], group_ids)


def l2_unicast_flows(ctx: DatapathContext, net: LocalNetwork) -> Iterator[Flow]:
    """Unicast to every bound port of `net`: out of its ofport here, or toward its host."""
    # Fields in name order, as `match()` gives them; shared where constant. Positional.
    metadata = MatchField("metadata", net.metadata)
    egress_by_host: dict[str, tuple[Action, ...]] = {}
    for port in net.bound_ports:
        if port.ofport is not None:
            yield Flow(
                TABLE_L2_FORWARD,
                PRIORITY_UNICAST,
                Match((MatchField("eth_dst", port.mac), metadata)),
                (Output(port.ofport),),
            )
        elif port.host_id != ctx.host_id:
            egress = egress_by_host.get(port.host_id)
            if egress is None:
                egress = egress_by_host[port.host_id] = egress_toward(ctx, net, port.host_id)
            if egress:
                yield Flow(
                    TABLE_L2_FORWARD,
                    PRIORITY_UNICAST,
                    Match((MatchField("eth_dst", port.mac), metadata, _FROM_LOCAL)),
                    egress,
                )


def l2_flood_flows(
    net: LocalNetwork, flood: FloodGroups, group_ids: Mapping[GroupContent, int]
) -> Iterator[Flow]:
    """Broadcast, multicast and unknown unicast of `net` to its flood groups."""
    origins = [(_FROM_LOCAL, flood.from_local)]
    if flood.from_remote is not None:
        origins.append((_FROM_REMOTE, flood.from_remote))
    metadata = MatchField("metadata", net.metadata)
    for origin, content in origins:
        to_group = (GroupAction(group_ids[content]),)
        # Fields in name order, as `match()` gives them.
        yield Flow(
            TABLE_L2_FORWARD, PRIORITY_FLOOD, Match((_MULTICAST, metadata, origin)), to_group
        )
        yield Flow(TABLE_L2_FORWARD, PRIORITY_UNKNOWN_UNICAST, Match((metadata, origin)), to_group)
