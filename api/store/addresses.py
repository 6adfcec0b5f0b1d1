"""Address allocation: a network's lowest free host address, found without reading
every address in use.

Each network has a cursor (`AddressCursor.next_free`): every host address below it
is in use (by a port, as the gateway or as a VIP). Allocation checks candidates
from the cursor upwards, a chunk at a time, against the UNIQUE (network_id, ip)
index, and moves the cursor past the address it hands out; every release (a port
deleted, a port's addresses changed, the gateway moved, a load balancer deleted)
lowers the cursor to the released address. So an allocation in a filling network
costs one indexed query, however many ports it has, and the address handed out is
still the lowest free one.

Write transactions are serialised (api.store.db), so the cursor read in one is
settled, and cursor and addresses change in the same transaction (a rollback
undoes both). The UNIQUE constraint keeps the last word.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Container, Iterable

from sqlalchemy import Connection, bindparam, insert, select, union_all, update
from sqlalchemy.orm import Session

from api.store.models import AddressCursor, LoadBalancer, Network, PortIp

# Candidates checked per query: few while the cursor is right (the usual case),
# more when it has to skip addresses given explicitly.
FIRST_CHUNK = 8
LARGEST_CHUNK = 256


def host_range(cidr: str) -> tuple[int, int]:
    """The first and last host address of `cidr` as integers (as `IPv4Network.hosts()`:
    a /31 and a /32 have no network or broadcast address to skip)."""
    network = ipaddress.IPv4Network(cidr)
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.prefixlen >= 31:
        return first, last
    return first + 1, last - 1


def lowest_free(
    session: Session,
    network: Network,
    *,
    port_id: str | None,
    own: Iterable[str] = (),
) -> str | None:
    """The lowest host address of `network` (which has a cidr) that nobody uses, the
    addresses of `port_id` (`own`) counting as free; None when every one is taken.
    The cursor moves past the returned address: the caller must then use it."""
    assert network.cidr is not None
    first, last = host_range(network.cidr)
    connection = _connection(session)
    cursor: int | None = connection.scalar(_CURSOR, {"of_network": network.id})
    start = max(first, cursor if cursor is not None else first)
    # The port's own addresses are free for it even below the cursor.
    start = min([start, *(a for a in _ipv4_ints(own) if first <= a <= last)])
    address = first_unused(
        start,
        last,
        lambda a: str(ipaddress.IPv4Address(a)),
        lambda batch: _used(connection, network, batch, port_id=port_id),
    )
    next_free = last + 1 if address is None else int(ipaddress.IPv4Address(address)) + 1
    params = {"of_network": network.id, "moved_to": next_free}
    if cursor is None:
        connection.execute(_NEW_CURSOR, params)
    elif next_free > cursor:
        connection.execute(_RAISE_CURSOR, params)
    return address


def first_unused(
    first: int,
    last: int,
    text: Callable[[int], str],
    used: Callable[[list[str]], Container[str]],
) -> str | None:
    """The lowest of the addresses `first`..`last` (as integers; `text` writes one) that
    `used` (asked about a batch at a time) does not hold; None when it holds them all."""
    chunk = FIRST_CHUNK
    candidate = first
    while candidate <= last:
        end = min(candidate + chunk, last + 1)
        batch = [text(a) for a in range(candidate, end)]
        taken = used(batch)
        for address in batch:
            if address not in taken:
                return address
        candidate = end
        chunk = min(chunk * 4, LARGEST_CHUNK)
    return None


def release(session: Session, network_id: str, addresses: Iterable[str]) -> None:
    """`addresses` of the network are free again (within this transaction): the
    cursor goes down to the lowest IPv4 one of them."""
    lowest = min(_ipv4_ints(addresses), default=None)
    if lowest is not None:
        _connection(session).execute(_LOWER_CURSOR, {"of_network": network_id, "moved_to": lowest})


# Built once: constructing a statement costs more CPU than SQLite running it. Core
# statements on the session's connection: the cursor is not an ORM object at all.
_USED = union_all(
    select(PortIp.ip).where(
        PortIp.network_id == bindparam("of_network"),
        PortIp.ip.in_(bindparam("batch", expanding=True)),
        PortIp.port_id != bindparam("port_id"),
    ),
    select(LoadBalancer.vip).where(
        LoadBalancer.network_id == bindparam("of_network"),
        LoadBalancer.vip.in_(bindparam("batch", expanding=True)),
    ),
)


_CURSOR = select(AddressCursor.next_free).where(AddressCursor.network_id == bindparam("of_network"))
_NEW_CURSOR = insert(AddressCursor).values(
    network_id=bindparam("of_network"), next_free=bindparam("moved_to")
)
_RAISE_CURSOR = (
    update(AddressCursor)
    .where(
        AddressCursor.network_id == bindparam("of_network"),
        AddressCursor.next_free < bindparam("moved_to"),
    )
    .values(next_free=bindparam("moved_to"))
)
_LOWER_CURSOR = (
    update(AddressCursor)
    .where(
        AddressCursor.network_id == bindparam("of_network"),
        AddressCursor.next_free > bindparam("moved_to"),
    )
    .values(next_free=bindparam("moved_to"))
)


def _connection(session: Session) -> Connection:
    """The session's connection, for the prebuilt Core statements above, once the ORM
    changes pending in `session` are written (they may hold or free addresses)."""
    session.flush()
    return session.connection()


def _used(
    connection: Connection, network: Network, batch: list[str], *, port_id: str | None
) -> set[str]:
    """Which of `batch` are held by a port other than `port_id`, a VIP or the gateway."""
    params = {"of_network": network.id, "batch": batch, "port_id": port_id or ""}
    used = set(connection.scalars(_USED, params))
    if network.gateway:
        used.add(network.gateway)
    return used


def _ipv4_ints(addresses: Iterable[str]) -> list[int]:
    """The IPv4 ones of `addresses` as integers (the cursor covers the IPv4 cidr only)."""
    return [int(a) for a in map(ipaddress.ip_address, addresses) if a.version == 4]
