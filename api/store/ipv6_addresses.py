"""A port's IPv6 addresses: checked against the network's ipv6_cidr, or allocated from it.

IPv6 addresses live in `port_ips` next to the IPv4 ones, as `ipaddress` writes them
(compressed, lower case: the schemas normalise what clients send), so UNIQUE
(network_id, ip) rules out a duplicate, races included, exactly as for IPv4: write
transactions are serialised (api.store.db) and the constraint keeps the last word.

Allocation hands out the lowest free host address of the prefix (the subnet-router
anycast address, the prefix itself, is never a host's): candidates are checked a chunk
at a time against the index, so it costs one query per chunk of addresses in use below
the first free one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Conflict, Invalid
from api.store.addresses import first_unused
from api.store.models import Network, PortIp
from api.validation import check_ipv6_host_address, duplicates

__all__ = ["is_ipv6", "resolve_ipv6", "split_families"]


def is_ipv6(address: str) -> bool:
    return ":" in address


def split_families(
    addresses: Sequence[str] | None,
) -> tuple[list[str] | None, list[str] | None]:
    """The IPv4 and the IPv6 addresses of `addresses`, in their order; None stays None
    (allocate one of each family the network has)."""
    if addresses is None:
        return None, None
    return [a for a in addresses if not is_ipv6(a)], [a for a in addresses if is_ipv6(a)]


def resolve_ipv6(
    session: Session, network: Network, requested: Sequence[str] | None, *, port_id: str | None
) -> list[str]:
    """The IPv6 addresses a port gets: `requested` checked, or the lowest free one of the
    network's ipv6_cidr when None (none when the network has no ipv6_cidr)."""
    if requested is None:
        if network.ipv6_cidr is None:
            return []
        free = _lowest_free(session, network, port_id=port_id)
        if free is None:
            raise Conflict(f"no free address left in {network.ipv6_cidr}")
        return [free]
    if requested and network.ipv6_cidr is None:
        raise Invalid(
            "ips", f"network {network.id} has no ipv6_cidr, so its ports cannot have IPv6 addresses"
        )
    repeated = duplicates(requested)
    if repeated:
        raise Invalid("ips", f"duplicate address {repeated[0]}")
    for address in requested:
        assert network.ipv6_cidr is not None
        try:
            check_ipv6_host_address(
                ipaddress.IPv6Address(address), ipaddress.IPv6Network(network.ipv6_cidr)
            )
        except ValueError as exc:
            raise Invalid("ips", str(exc)) from None
    holders = _holders(session, network, list(requested), port_id=port_id)
    for address in requested:
        if address in holders:
            raise Conflict(f"{address} is already used by port {holders[address]}")
    return list(requested)


def _holders(
    session: Session, network: Network, wanted: list[str], *, port_id: str | None
) -> dict[str, str]:
    rows = session.execute(
        select(PortIp.ip, PortIp.port_id).where(
            PortIp.network_id == network.id,
            PortIp.ip.in_(wanted),
            PortIp.port_id != (port_id or ""),
        )
    )
    return {ip: holder for ip, holder in rows}


def _lowest_free(session: Session, network: Network, *, port_id: str | None) -> str | None:
    assert network.ipv6_cidr is not None
    prefix = ipaddress.IPv6Network(network.ipv6_cidr)
    return first_unused(
        int(prefix.network_address) + 1, int(prefix.broadcast_address),
        lambda value: str(ipaddress.IPv6Address(value)),
        lambda batch: _holders(session, network, batch, port_id=port_id),
    )
