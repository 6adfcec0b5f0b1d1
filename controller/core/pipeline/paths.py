"""The ways between this host and the others for a network's frames.

A VLAN network leaves and arrives through the uplink, tagged with its VLAN id;
a VXLAN network through one tunnel per peer host, with its VNI.
"""

from __future__ import annotations

from controller.core.flows import VLAN_PRESENT, Action, Output, PushVlan, SetField
from controller.core.pipeline.context import DatapathContext, LocalNetwork

__all__ = ["egress_toward", "flood_egress", "ingress_ofports"]


def _uplink_egress(ctx: DatapathContext, net: LocalNetwork) -> tuple[Action, ...]:
    if ctx.uplink_ofport is None:
        return ()
    return (
        PushVlan(),
        SetField("vlan_vid", VLAN_PRESENT | net.spec.segmentation_id),
        Output(ctx.uplink_ofport),
    )


def _tunnel_egress(
    ctx: DatapathContext, net: LocalNetwork, peer_host_id: str
) -> tuple[Action, ...]:
    tunnel = ctx.tunnel_ofports.get(peer_host_id)
    if tunnel is None:
        return ()
    return (SetField("tunnel_id", net.spec.segmentation_id), Output(tunnel))


def egress_toward(ctx: DatapathContext, net: LocalNetwork, peer_host_id: str) -> tuple[Action, ...]:
    """Actions sending a frame of `net` to a port on `peer_host_id`; () when no path exists."""
    if net.spec.type == "vlan":
        return _uplink_egress(ctx, net)
    return _tunnel_egress(ctx, net, peer_host_id)


def flood_egress(ctx: DatapathContext, net: LocalNetwork) -> list[tuple[Action, ...]]:
    """One bucket's actions per way out of this host for a flooded frame of `net`."""
    if net.spec.type == "vlan":
        # The trunk may carry devices we do not manage (a physical gateway), so a
        # VLAN broadcast goes out even when no other managed host has ports in it.
        uplink = _uplink_egress(ctx, net)
        return [uplink] if uplink else []
    paths = (_tunnel_egress(ctx, net, peer) for peer in net.remote_hosts)
    return sorted((p for p in paths if p), key=_output_port)


def _output_port(actions: tuple[Action, ...]) -> int:
    last = actions[-1]
    assert isinstance(last, Output)
    return last.port


def ingress_ofports(ctx: DatapathContext, net: LocalNetwork) -> tuple[int, ...]:
    """Switch ports through which frames of `net` may arrive from other hosts."""
    if net.spec.type == "vlan":
        return () if ctx.uplink_ofport is None else (ctx.uplink_ofport,)
    peers = (ctx.tunnel_ofports.get(peer) for peer in net.remote_hosts)
    return tuple(sorted(ofport for ofport in peers if ofport is not None))
