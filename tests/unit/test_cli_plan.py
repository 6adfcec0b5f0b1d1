"""`ovs-fabric apply`'s plan: the diff between a declared topology and the service's.

The service's side is a `/topology` document; `realize` below builds the one the
service would hold after creating a declaration (ids, allocated fields), so the
properties read: applying what the plan says leaves nothing to do, undeclared
objects go only with prune, parents are made before their children.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.cli.document import Document, DocumentError, parse_document
from api.cli.plan import KIND_ORDER, Change, create_body, plan, update_body

pytestmark = pytest.mark.unit

_ids = itertools.count(1)


def _id() -> str:
    return f"00000000-0000-4000-8000-{next(_ids):012d}"


def realize(
    document: Document, *, extra_port: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    """The topology the service holds once every declared object exists."""
    topology: dict[str, Any] = {"revision": 1, "hosts": [], "tenants": [], "networks": [],
                                "ports": [], "load_balancers": []}
    host_ids = {}
    for host in document.hosts or ():
        host_ids[host.name] = _id()
        topology["hosts"].append({"id": host_ids[host.name], **host.model_dump()})
    for tenant in document.tenants:
        tenant_id = _id()
        topology["tenants"].append(
            {"id": tenant_id, "name": tenant.name, "description": tenant.description or ""})
        for net in tenant.networks:
            net_id = _id()
            topology["networks"].append({
                "id": net_id, "tenant_id": tenant_id, "name": net.name, "type": net.type,
                "cidr": net.cidr, "gateway": net.gateway, "ipv6_cidr": net.ipv6_cidr,
                "segmentation_id": net.segmentation_id or 7,
            })
            port_ids = {}
            for n, port in enumerate(net.ports):
                port_ids[port.name] = _id()
                topology["ports"].append({
                    "id": port_ids[port.name], "network_id": net_id, "tenant_id": tenant_id,
                    "name": port.name, "mac": port.mac or f"02:00:00:00:00:{n:02x}",
                    "ips": list(port.ips) if port.ips is not None else [f"10.0.0.{n + 2}"],
                    "origin": "api", "status": "DOWN",
                    "binding": {"host_id": host_ids.get(port.host or ""),
                                "interface": port.interface, "vm_id": port.vm_id},
                })
            for lb in net.load_balancers:
                topology["load_balancers"].append({
                    "id": _id(), "network_id": net_id, "tenant_id": tenant_id, "name": lb.name,
                    "vip": lb.vip, "port": lb.port, "protocol": lb.protocol,
                    "health_check": {"enabled": True, "interval": 2.0, "timeout": 1.0, "rise": 2,
                                     "fall": 2, **(lb.health_check.model_dump(exclude_none=True)
                                                   if lb.health_check else {})},
                    "backends": [
                        {"ip": b.ip or "10.0.0.99", "port": b.port, "weight": b.weight,
                         "port_id": port_ids.get(b.port_name or "")}
                        for b in lb.backends or ()
                    ],
                })
    if extra_port is not None:  # made by someone else: not in the file
        network = topology["networks"][0]
        topology["ports"].append({
            "id": _id(), "network_id": network["id"], "tenant_id": network["tenant_id"],
            "name": extra_port[2], "mac": "02:00:00:00:ff:ff", "ips": [], "origin": extra_port[0],
            "status": "DOWN", "binding": {"host_id": None, "interface": None, "vm_id": None},
        })
    return topology


EMPTY: dict[str, Any] = realize(Document())

names = st.sampled_from(["a", "b", "c", "web", "db"])


@st.composite
def documents(draw: st.DrawFn) -> Document:
    hosts = draw(st.lists(names, unique=True, max_size=2))
    tenants = []
    for tenant in draw(st.lists(names, unique=True, max_size=3)):
        networks = []
        for net in draw(st.lists(names, unique=True, max_size=2)):
            ports = [
                {"name": p, **({"host": draw(st.sampled_from(hosts)), "interface": f"tap-{p}"}
                               if hosts and draw(st.booleans()) else {}),
                 **({"ips": [f"10.0.0.{i + 10}"]} if draw(st.booleans()) else {})}
                for i, p in enumerate(draw(st.lists(names, unique=True, max_size=3)))
            ]
            lbs = []
            if ports and draw(st.booleans()):
                lbs.append({"name": f"{net}-lb", "vip": "10.0.0.200", "port": 80,
                            "backends": [{"port_name": p["name"], "port": 8080} for p in ports]})
            networks.append({"name": net, "type": draw(st.sampled_from(["vlan", "vxlan"])),
                             "cidr": "10.0.0.0/24", "ports": ports, "load_balancers": lbs})
        tenants.append({"name": tenant, "networks": networks})
    raw: dict[str, Any] = {"tenants": tenants}
    if hosts:
        raw["hosts"] = [{"name": h, "ovsdb_remote": f"unix:/run/{h}/db.sock"} for h in hosts]
    return parse_document(raw)


def _count(document: Document) -> int:
    networks = [n for t in document.tenants for n in t.networks]
    return (len(document.hosts or ()) + len(document.tenants) + len(networks)
            + sum(len(n.ports) + len(n.load_balancers) for n in networks))


@settings(max_examples=60, deadline=None)
@given(documents())
def test_from_nothing_everything_is_created_parents_first(document: Document) -> None:
    result = plan(document, EMPTY)

    assert {c.action for c in result.changes} <= {"create"}
    assert len(result.changes) == _count(document)
    order = [KIND_ORDER.index(c.kind) for c in result.changes]
    assert order == sorted(order)


@settings(max_examples=60, deadline=None)
@given(documents())
def test_once_realized_nothing_is_left_to_do(document: Document) -> None:
    assert not plan(document, realize(document), prune=True)


@settings(max_examples=60, deadline=None)
@given(documents(), st.data())
def test_a_removed_entry_goes_only_with_prune(document: Document, data: st.DataObject) -> None:
    # A port no load balancer names: removing it leaves a valid file.
    ports = [(t.name, n.name, p.name) for t in document.tenants for n in t.networks for p in n.ports
             if not n.load_balancers]
    if not ports:
        return
    removed = data.draw(st.sampled_from(ports))
    before = realize(document)
    raw = document.model_dump(exclude_none=True)
    for tenant in raw["tenants"]:
        for net in tenant["networks"]:
            if (tenant["name"], net["name"]) == removed[:2]:
                net["ports"] = [p for p in net["ports"] if p["name"] != removed[2]]
    smaller = parse_document(raw)

    kept = plan(smaller, before)
    pruned = plan(smaller, before, prune=True)

    assert not kept and kept.kept == (f"port {'/'.join(removed)}",)
    assert [(c.action, c.kind, c.key) for c in pruned.changes] == [("delete", "port", removed)]


def _doc(**network: Any) -> Document:
    base = {"name": "web", "type": "vxlan", "cidr": "10.0.0.0/24"}
    return parse_document({"tenants": [{"name": "acme", "networks": [{**base, **network}]}]})


def test_only_stated_fields_are_compared() -> None:
    declared = _doc(ports=[{"name": "p1"}])  # MAC, IPs and segment left to the service
    current = realize(_doc(ports=[{"name": "p1", "mac": "02:aa:00:00:00:01", "ips": ["10.0.0.9"]}],
                           segmentation_id=42))
    assert not plan(declared, current)


def test_a_changed_field_is_an_update_with_only_that_field() -> None:
    current = realize(_doc(ports=[{"name": "p1", "ips": ["10.0.0.9"]}], gateway="10.0.0.1"))
    result = plan(_doc(ports=[{"name": "p1", "ips": ["10.0.0.8"]}], gateway="10.0.0.1"), current)

    (change,) = result.changes
    assert (change.action, change.kind, change.key) == ("update", "port", ("acme", "web", "p1"))
    assert update_body(change, _no_ids) == {"ips": ["10.0.0.8"]}


def test_a_new_binding_patches_host_and_interface_together() -> None:
    hosts = [{"name": "h1", "ovsdb_remote": "unix:/x"}]
    unbound = parse_document({"hosts": hosts, "tenants": [{"name": "t", "networks": [
        {"name": "n", "type": "vlan", "ports": [{"name": "p"}]}]}]})
    bound = parse_document({"hosts": hosts, "tenants": [{"name": "t", "networks": [
        {"name": "n", "type": "vlan", "ports": [{"name": "p", "host": "h1", "interface": "i"}]}]}]})

    (change,) = plan(bound, realize(unbound)).changes

    assert update_body(change, lambda kind, key: f"{kind}:{'/'.join(key)}") == {
        "host_id": "host:h1", "interface": "i"}


def test_an_immutable_difference_is_a_conflict_not_a_change() -> None:
    result = plan(_doc(type="vlan"), realize(_doc(type="vxlan")))

    assert not result.changes
    assert result.conflicts == (
        "network acme/web: type is 'vxlan', the file says 'vlan'; it cannot change in place "
        "(remove the entry, apply with --prune, then add it back)",
    )


def test_an_ipv6_prefix_is_created_with_its_network_and_cannot_change_in_place() -> None:
    created = plan(_doc(ipv6_cidr="fd00:1::/64"), realize(parse_document({"tenants": [
        {"name": "acme"}]})))
    (network,) = [c for c in created.changes if c.label == "network acme/web"]
    assert create_body(network, lambda kind, key: "id")["ipv6_cidr"] == "fd00:1::/64"
    moved = plan(_doc(ipv6_cidr="fd00:2::/64"), realize(_doc(ipv6_cidr="fd00:1::/64")))
    assert not moved.changes
    assert moved.conflicts == (
        "network acme/web: ipv6_cidr is 'fd00:1::/64', the file says 'fd00:2::/64'; it "
        "cannot change in place (remove the entry, apply with --prune, then add it back)",
    )


def test_libvirt_ports_are_never_pruned() -> None:
    declared = _doc()
    current = realize(declared, extra_port=("libvirt", "", "vm-nic"))

    result = plan(declared, current, prune=True)

    assert not result.changes and result.kept == (
        "port acme/web/vm-nic (made by the libvirt watcher)",)


def test_hosts_are_pruned_only_by_a_file_that_lists_hosts() -> None:
    with_host = parse_document({"hosts": [{"name": "h1", "ovsdb_remote": "unix:/x"}]})
    assert not plan(Document(), realize(with_host), prune=True)
    (change,) = plan(parse_document({"hosts": []}), realize(with_host), prune=True).changes
    assert (change.action, change.key) == ("delete", ("h1",))


def test_create_bodies_resolve_names_to_ids() -> None:
    declared = _doc(ports=[{"name": "p1", "ips": ["10.0.0.5"]}], load_balancers=[
        {"name": "lb", "vip": "10.0.0.100", "port": 80,
         "backends": [{"port_name": "p1", "port": 8080, "weight": 2},
                      {"ip": "10.0.0.7", "port": 81}]}])
    changes = {c.kind: c for c in plan(declared, EMPTY).changes}
    ids = lambda kind, key: f"{kind}:{'/'.join(key)}"  # noqa: E731

    assert create_body(changes["port"], ids) == {
        "network_id": "network:acme/web", "name": "p1", "ips": ["10.0.0.5"]}
    assert create_body(changes["load_balancer"], ids)["backends"] == [
        {"port": 8080, "weight": 2, "port_id": "port:acme/web/p1"},
        {"port": 81, "weight": 1, "ip": "10.0.0.7"},
    ]


@pytest.mark.parametrize(("raw", "message"), [
    ({"tenants": [{"name": "a"}, {"name": "a"}]}, "tenant 'a' is declared twice"),
    ({"tenants": [{"name": "a", "networks": [{"name": "n", "type": "vlan", "ports": [
        {"name": "p", "host": "h1"}]}]}]}, "a binding needs both host and interface"),
    ({"tenants": [{"name": "a", "networks": [{"name": "n", "type": "vlan", "load_balancers": [
        {"name": "l", "vip": "10.0.0.1", "port": 80, "backends": [{"port_name": "x", "port": 1}]}
    ]}]}]}, "backend port_name 'x' is not a port of network n"),
    ({"tenant": []}, "tenant: Extra inputs are not permitted"),
])
def test_bad_files_are_refused_with_the_place_named(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        parse_document(raw, "f.yaml")


def _no_ids(kind: str, key: tuple[str, ...]) -> str:
    raise AssertionError(f"no id needed, asked for {kind} {key}")


def test_change_labels_read_as_paths() -> None:
    assert Change("delete", "load_balancer", ("t", "n", "lb")).label == "load balancer t/n/lb"


def test_what_is_kept_reads_as_one_line_of_outermost_objects() -> None:
    from api.cli.apply import kept_summary

    assert kept_summary(("port red/lan/r1", "network red/lan", "tenant red", "tenant blue")) == (
        "kept, not in the file (--prune deletes them): tenant red, tenant blue "
        "and 2 object(s) inside them")
