"""Pure rules for the values the API accepts: MACs, OVS names, OVSDB remotes, addresses.

Every check raises ValueError with a message fit to be shown to the client; the
pydantic schemas and the CRUD layer both call these, so a rule lives in one place.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Collection, Iterable

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")
# Linux limits interface names to 15 bytes (IFNAMSIZ - 1); OVS follows it.
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_LIBVIRT_URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S*$")
_DATAPATH_ID_RE = re.compile(r"^[0-9a-f]{16}$")


def check_no_nul(text: str) -> str:
    """Refuse NUL characters: PostgreSQL cannot store them in text, SQLite would."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters (\\u0000)")
    return text


def normalize_mac(text: str) -> str:
    """Lower-case, colon-separated unicast MAC; rejects multicast and all-zero."""
    if not _MAC_RE.match(text):
        raise ValueError(f"{text!r} is not a MAC address like 02:00:00:00:00:01")
    mac = text.lower().replace("-", ":")
    first_octet = int(mac[:2], 16)
    if first_octet & 0x01:
        raise ValueError(f"{mac} is a multicast/broadcast MAC; a port needs a unicast MAC")
    if mac == "00:00:00:00:00:00":
        raise ValueError("00:00:00:00:00:00 is not a usable MAC")
    return mac


def random_local_mac(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A locally administered unicast MAC in 02:xx:xx:xx:xx:xx."""
    return "02:" + ":".join(f"{b:02x}" for b in token_bytes(5))


def check_interface_name(name: str) -> str:
    if not _IFACE_RE.match(name):
        raise ValueError(
            f"{name!r} is not an OVS interface name (1-15 characters of A-Z a-z 0-9 _ . -)"
        )
    return name


def check_datapath_id(text: str) -> str:
    if not _DATAPATH_ID_RE.match(text):
        raise ValueError(f"{text!r} is not a datapath id (16 lower-case hex digits)")
    return text


def check_libvirt_uri(uri: str) -> str:
    if not _LIBVIRT_URI_RE.match(uri) or len(uri) > 255:
        raise ValueError(f"{uri!r} is not a libvirt URI like qemu:///system")
    return uri


def check_ovsdb_remote(remote: str) -> str:
    """``unix:/abs/path``, ``tcp:IP:PORT`` or ``ssl:IP:PORT`` (IPv6 in brackets)."""
    method, sep, rest = remote.partition(":")
    if not sep:
        raise ValueError(f"{remote!r}: expected unix:/path, tcp:IP:PORT or ssl:IP:PORT")
    if method == "unix":
        if not rest.startswith("/") or len(rest) < 2 or any(c.isspace() for c in rest):
            raise ValueError(f"{remote!r}: a unix remote needs an absolute socket path")
        return remote
    if method not in ("tcp", "ssl"):
        raise ValueError(f"{remote!r}: method must be unix, tcp or ssl")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{remote!r}: expected {method}:IP:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{remote!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{remote!r}: port must be 1-65535")
    return remote


def check_unicast_ipv4(text: str) -> str:
    address = ipaddress.IPv4Address(text)
    if (
        address.is_multicast
        or address.is_unspecified
        or address == ipaddress.IPv4Address("255.255.255.255")
    ):
        raise ValueError(f"{address} is not a unicast address")
    return str(address)


def parse_ipv4_network(text: str) -> ipaddress.IPv4Network:
    """A network in CIDR form with no host bits set (10.0.0.0/24, not 10.0.0.1/24)."""
    try:
        network = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 network in CIDR form: {exc}") from None
    if "/" not in text:
        raise ValueError(f"{text!r} needs a prefix length, e.g. {text}/24")
    return network


def check_host_address(address: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> None:
    """`address` must be usable by a host of `network` (not its network/broadcast address)."""
    if address not in network:
        raise ValueError(f"{address} is outside {network}")
    if network.prefixlen <= 30 and address in (network.network_address, network.broadcast_address):
        which = "network" if address == network.network_address else "broadcast"
        raise ValueError(f"{address} is the {which} address of {network}")


def lowest_free_address(
    network: ipaddress.IPv4Network, taken: Collection[ipaddress.IPv4Address]
) -> ipaddress.IPv4Address | None:
    """The lowest host address of `network` not in `taken`, or None when all are used."""
    for candidate in network.hosts():
        if candidate not in taken:
            return candidate
    return None


def duplicates(values: Iterable[object]) -> list[object]:
    seen: set[object] = set()
    repeated: list[object] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


def parse_ipv6_network(text: str) -> ipaddress.IPv6Network:
    """A unicast IPv6 network in CIDR form with no host bits set (fd00:1::/64), with room
    for hosts (prefix length at most 126); link-local, multicast and special ranges refused."""
    try:
        network = ipaddress.IPv6Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv6 network in CIDR form: {exc}") from None
    if "/" not in text:
        raise ValueError(f"{text!r} needs a prefix length, e.g. {text}/64")
    if network.prefixlen > 126:
        raise ValueError(f"{network} leaves no room for hosts: the prefix length must be <= 126")
    for kind in ("link_local", "multicast", "loopback", "unspecified", "site_local"):
        if getattr(network, f"is_{kind}"):
            raise ValueError(f"{network} is a {kind.replace('_', '-')} network, not a unicast one")
    if network.overlaps(ipaddress.IPv6Network("::ffff:0:0/96")):
        raise ValueError(f"{network} overlaps the IPv4-mapped range ::ffff:0:0/96")
    return network


def check_unicast_ip(text: str) -> str:
    """A unicast IPv4 or IPv6 address as ipaddress writes it (IPv6 compressed, lower case),
    so one address is one text in the database. IPv6 link-local addresses are refused: a
    port's is derived from its MAC (modified EUI-64)."""
    if ":" not in text:
        return check_unicast_ipv4(text)
    address = ipaddress.IPv6Address(text)
    if address.is_link_local:
        raise ValueError(f"{address} is link-local: a port's link-local address comes from its MAC")
    if address.ipv4_mapped is not None:
        raise ValueError(f"{address} is an IPv4-mapped address; give the IPv4 address itself")
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        raise ValueError(f"{address} is not a unicast address")
    return str(address)


def check_ipv6_host_address(address: ipaddress.IPv6Address, network: ipaddress.IPv6Network) -> None:
    """`address` must be usable by a host of `network` (not its subnet-router anycast address)."""
    if address not in network:
        raise ValueError(f"{address} is outside {network}")
    if address == network.network_address:
        raise ValueError(f"{address} is the subnet-router anycast address of {network}")
