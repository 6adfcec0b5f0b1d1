"""Value rules: MACs, interface names, OVSDB remotes, addresses."""

from __future__ import annotations

import ipaddress

import pytest

from api.validation import (
    check_host_address,
    check_interface_name,
    check_ovsdb_remote,
    duplicates,
    lowest_free_address,
    normalize_mac,
    parse_ipv4_network,
    random_local_mac,
)

pytestmark = pytest.mark.unit


def test_mac_is_normalised_to_lower_case_colons() -> None:
    assert normalize_mac("02-AB-cd-00-00-01") == "02:ab:cd:00:00:01"


@pytest.mark.parametrize(
    "mac",
    [
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
        "02:00:00:00:00",
        "02:00:00:00:00:0g",
        "02:00-00:00:00:01",
        "0200.0000.0001",
        "",
    ],
)
def test_bad_macs_are_rejected(mac: str) -> None:
    with pytest.raises(ValueError):
        normalize_mac(mac)


def test_random_mac_is_locally_administered_unicast() -> None:
    mac = random_local_mac(lambda n: bytes([0xFF] * n))
    assert mac == "02:ff:ff:ff:ff:ff"
    assert normalize_mac(random_local_mac()).startswith("02:")


@pytest.mark.parametrize("name", ["tap0", "vnet-12", "a", "x" * 15, "eth0.100", "br_int"])
def test_good_interface_names(name: str) -> None:
    assert check_interface_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "tap 0", "tap/0", "täp"])
def test_bad_interface_names(name: str) -> None:
    with pytest.raises(ValueError, match="OVS interface name"):
        check_interface_name(name)


@pytest.mark.parametrize(
    "remote",
    [
        "unix:/var/run/openvswitch/db.sock",
        "tcp:127.0.0.1:6640",
        "ssl:192.0.2.1:6640",
        "tcp:[::1]:6640",
    ],
)
def test_good_ovsdb_remotes(remote: str) -> None:
    assert check_ovsdb_remote(remote) == remote


@pytest.mark.parametrize(
    "remote",
    [
        "unix:relative/db.sock",
        "unix:",
        "tcp:127.0.0.1",
        "tcp:localhost:6640",
        "tcp:1.2.3.4:0",
        "tcp:1.2.3.4:70000",
        "udp:1.2.3.4:6640",
        "/var/run/db.sock",
        "ptcp:6640",
    ],
)
def test_bad_ovsdb_remotes(remote: str) -> None:
    with pytest.raises(ValueError):
        check_ovsdb_remote(remote)


def test_network_must_be_in_cidr_form_without_host_bits() -> None:
    assert str(parse_ipv4_network("10.0.0.0/24")) == "10.0.0.0/24"
    for bad in ("10.0.0.1/24", "10.0.0.0", "10.0.0.0/33", "fe80::/64", "nonsense"):
        with pytest.raises(ValueError):
            parse_ipv4_network(bad)


def test_host_address_excludes_network_and_broadcast() -> None:
    net = ipaddress.IPv4Network("10.0.0.0/24")
    check_host_address(ipaddress.IPv4Address("10.0.0.1"), net)
    for bad, why in (
        ("10.0.0.0", "network address"),
        ("10.0.0.255", "broadcast"),
        ("10.0.1.1", "outside"),
    ):
        with pytest.raises(ValueError, match=why):
            check_host_address(ipaddress.IPv4Address(bad), net)
    # A /31 has no network or broadcast address (RFC 3021).
    check_host_address(ipaddress.IPv4Address("10.0.0.0"), ipaddress.IPv4Network("10.0.0.0/31"))


def test_lowest_free_address_skips_taken_ones() -> None:
    net = ipaddress.IPv4Network("10.0.0.0/29")
    taken = {ipaddress.IPv4Address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.4")}
    assert lowest_free_address(net, taken) == ipaddress.IPv4Address("10.0.0.3")
    full = {ipaddress.IPv4Address(f"10.0.0.{i}") for i in range(1, 7)}
    assert lowest_free_address(net, full) is None


def test_duplicates_are_reported_once_in_order() -> None:
    assert duplicates(["a", "b", "a", "c", "b", "a"]) == ["a", "b"]
    assert duplicates([]) == []
