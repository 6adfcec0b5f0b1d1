"""`ovs-fabric hosts|tenants|networks|ports|lbs list|show|create|delete` over the REST API.

Objects are named by id or by name (a name that matches several objects is an
error that says so). Tables show names where the API gives ids, looked up with
the same token: what it may not see stays an id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from api.cli.common import CliError
from api.cli.remote import (
    Column,
    Output,
    OutputOption,
    TokenOption,
    UrlOption,
    connect,
    console,
    field,
    print_json,
    short_id,
    table,
)
from api.client import ApiError, FabricClient

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

Lookups = dict[str, dict[str, str]]  # resource path -> {id: name}


@dataclass(frozen=True)
class Kind:
    """One resource as the CLI shows it."""

    command: str  # `ovs-fabric <command> ...`
    path: str  # /api/v1/<path>
    noun: str
    columns: Callable[[Lookups], list[Column]]
    # The other resources whose names the table shows instead of ids.
    lookups: tuple[str, ...] = ()


def _named(lookups: Lookups, path: str, key: str) -> Callable[[dict[str, Any]], object]:
    def get(item: dict[str, Any]) -> object:
        value = item.get(key)
        return lookups.get(path, {}).get(str(value), short_id(value)) if value else None

    return get


def _binding(lookups: Lookups) -> Callable[[dict[str, Any]], object]:
    def get(item: dict[str, Any]) -> object:
        host_id = item["binding"]["host_id"]
        if host_id is None:
            return None
        host = lookups.get("hosts", {}).get(host_id, short_id(host_id))
        return f"{host}/{item['binding']['interface']}"

    return get


def _status(item: dict[str, Any]) -> str:
    status = str(item["status"])
    colour = {"ACTIVE": "green", "DOWN": "yellow", "ERROR": "red"}.get(status, "white")
    return f"[{colour}]{status}[/{colour}]"


def backend_text(backend: dict[str, Any]) -> str:
    health = backend.get("health", "unknown")
    colour = {"healthy": "green", "unhealthy": "red"}.get(health, "yellow")
    return f"{backend['ip']}:{backend['port']} w{backend['weight']} [{colour}]{health}[/{colour}]"


KINDS: dict[str, Kind] = {
    kind.command: kind
    for kind in (
        Kind("hosts", "hosts", "host", lambda _l: [
            ("name", field("name")), ("id", lambda h: short_id(h["id"])),
            ("ovsdb remote", field("ovsdb_remote")), ("tunnel ip", field("tunnel_ip")),
            ("uplink", field("uplink")), ("ovsdb", field("ovsdb_connected")),
            ("openflow", field("openflow_connected")), ("last error", field("last_error")),
        ]),
        Kind("tenants", "tenants", "tenant", lambda _l: [
            ("name", field("name")), ("id", lambda t: short_id(t["id"])),
            ("description", field("description")),
        ]),
        Kind("networks", "networks", "network", lambda lookups: [
            ("name", field("name")), ("id", lambda n: short_id(n["id"])),
            ("tenant", _named(lookups, "tenants", "tenant_id")), ("type", field("type")),
            ("segment", field("segmentation_id")), ("cidr", field("cidr")),
            ("gateway", field("gateway")),
        ], lookups=("tenants",)),
        Kind("ports", "ports", "port", lambda lookups: [
            ("name", field("name")), ("id", lambda p: short_id(p["id"])),
            ("network", _named(lookups, "networks", "network_id")), ("mac", field("mac")),
            ("ips", field("ips")), ("bound to", _binding(lookups)), ("status", _status),
        ], lookups=("networks", "hosts")),
        Kind("lbs", "load-balancers", "load balancer", lambda lookups: [
            ("name", field("name")), ("id", lambda lb: short_id(lb["id"])),
            ("network", _named(lookups, "networks", "network_id")),
            ("vip", lambda lb: f"{lb['vip']}:{lb['port']}/{lb['protocol']}"),
            ("backends", lambda lb: "\n".join(backend_text(b) for b in lb["backends"]) or None),
        ], lookups=("networks",)),
    )
}


def names_of(client: FabricClient, path: str) -> dict[str, str]:
    """{id: name} of what the token may list; nothing if it may not (a tenant's hosts)."""
    try:
        items = client.list_all(path)
    except ApiError as exc:
        if exc.status in (401, 403):
            return {}
        raise
    return {item["id"]: str(item.get("name") or short_id(item["id"])) for item in items}


def resolve(
    client: FabricClient, kind: Kind, ref: str, **filters: str
) -> dict[str, Any]:
    """The object named `ref` (an id, or a name unique among what the token sees)."""
    if _UUID.match(ref):
        return client.get(kind.path, ref)
    matches = [item for item in client.list_all(kind.path, **filters) if item.get("name") == ref]
    if not matches:
        raise CliError(f"no {kind.noun} named {ref!r} (hint: `ovs-fabric {kind.command} list`)")
    if len(matches) > 1:
        ids = ", ".join(item["id"] for item in matches)
        raise CliError(f"{len(matches)} {kind.noun}s are named {ref!r} ({ids}); give the id")
    return matches[0]


def resolve_id(client: FabricClient, command: str, ref: str | None, **filters: str) -> str | None:
    return None if ref is None else str(resolve(client, KINDS[command], ref, **filters)["id"])


def show_items(
    client: FabricClient, kind: Kind, items: list[dict[str, Any]], output: Output
) -> None:
    if output is Output.json:
        print_json(items)
        return
    lookups = {path: names_of(client, path) for path in kind.lookups}
    console.print(table(f"{kind.command} ({len(items)})", kind.columns(lookups), items))


def show_one(item: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(item)
        return
    rows = table("", [("field", field("k")), ("value", field("v"))], [
        {"k": key, "v": value} for key, value in _flatten(item)
    ])
    rows.show_header = False
    console.print(rows)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [pair for key, sub in value.items() for pair in _flatten(sub, f"{prefix}{key}.")]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [pair for i, sub in enumerate(value) for pair in _flatten(sub, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), value)]


def _label(kind: Kind, item: dict[str, Any]) -> str:
    name = f" {item['name']}" if item.get("name") else ""
    return f"{kind.noun}{name} ({item['id']})"


def created(kind: Kind, item: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(item)
    else:
        console.print(f"created {_label(kind, item)}")


# ---- the generic commands --------------------------------------------------------------


def _add_generic_commands(group: typer.Typer, kind: Kind) -> None:
    @group.command("show")
    def show(
        ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
        output: OutputOption = Output.table,
        url: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        """Show one object."""
        with connect(url, token) as client:
            show_one(resolve(client, kind, ref), output)

    show.__doc__ = f"Show one {kind.noun}."

    @group.command("delete")
    def delete(
        ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
        url: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        """Delete one object."""
        with connect(url, token) as client:
            item = resolve(client, kind, ref)
            client.delete(kind.path, item["id"])
        console.print(f"deleted {_label(kind, item)}")

    delete.__doc__ = f"Delete one {kind.noun}."


def _group(kind: Kind) -> typer.Typer:
    return typer.Typer(help=f"{kind.noun.capitalize()}s (REST: /api/v1/{kind.path}).",
                       no_args_is_help=True)


hosts_app = _group(KINDS["hosts"])
tenants_app = _group(KINDS["tenants"])
networks_app = _group(KINDS["networks"])
ports_app = _group(KINDS["ports"])
lbs_app = _group(KINDS["lbs"])


def _drop_none(**body: Any) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


# The list filters given as a parent's name or id: `--tenant` -> tenant_id.
_PARENTS = {"tenant": "tenants", "network": "networks"}


def _list(
    command: str, output: Output, url: str | None, token: str | None, **filters: str | None
) -> None:
    """`ovs-fabric <command> list`: `filters` as the API names them, except a parent
    (tenant=, network=), which is a name or id resolved first; None: no filter."""
    kind = KINDS[command]
    with connect(url, token) as client:
        params: dict[str, str] = {}
        for key, value in filters.items():
            if key in _PARENTS:
                key, value = f"{key}_id", resolve_id(client, _PARENTS[key], value)
            if value is not None:
                params[key] = value
        show_items(client, kind, client.list_all(kind.path, **params), output)


# ---- hosts -------------------------------------------------------------------------------


@hosts_app.command("list")
def hosts_list(output: OutputOption = Output.table, url: UrlOption = None,
               token: TokenOption = None) -> None:
    """List hosts with their OVSDB and OpenFlow state (admin)."""
    _list("hosts", output, url, token)


@hosts_app.command("create")
def hosts_create(
    name: Annotated[str, typer.Argument()],
    ovsdb_remote: Annotated[str, typer.Option(help="unix:PATH, tcp:IP:PORT or ssl:IP:PORT.")],
    tunnel_ip: Annotated[str | None, typer.Option(help="Underlay address for VXLAN.")] = None,
    uplink: Annotated[str | None, typer.Option(help="The VLAN trunk interface.")] = None,
    libvirt_uri: Annotated[str | None, typer.Option(help="libvirt to watch for VMs.")] = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Register a host (admin)."""
    body = _drop_none(name=name, ovsdb_remote=ovsdb_remote, tunnel_ip=tunnel_ip,
                      uplink=uplink, libvirt_uri=libvirt_uri)
    with connect(url, token) as client:
        created(KINDS["hosts"], client.create("hosts", **body), output)


# ---- tenants -----------------------------------------------------------------------------


@tenants_app.command("list")
def tenants_list(output: OutputOption = Output.table, url: UrlOption = None,
                 token: TokenOption = None) -> None:
    """List tenants (admin)."""
    _list("tenants", output, url, token)


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument()],
    description: Annotated[str | None, typer.Option()] = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a tenant (admin)."""
    with connect(url, token) as client:
        item = client.create("tenants", **_drop_none(name=name, description=description))
        created(KINDS["tenants"], item, output)


# ---- networks ----------------------------------------------------------------------------

TenantOption = Annotated[
    str | None, typer.Option(help="Tenant name or id (admin tokens; a tenant's own is implied).")
]


@networks_app.command("list")
def networks_list(
    tenant: TenantOption = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List networks."""
    _list("networks", output, url, token, tenant=tenant)


@networks_app.command("create")
def networks_create(
    name: Annotated[str, typer.Argument()],
    tenant: TenantOption = None,
    type: Annotated[str, typer.Option("--type", help="vlan or vxlan.")] = "vxlan",
    cidr: Annotated[str | None, typer.Option(help="e.g. 10.0.0.0/24")] = None,
    gateway: Annotated[str | None, typer.Option()] = None,
    segmentation_id: Annotated[
        int | None, typer.Option(help="VLAN id or VNI (admin; allocated when absent).")
    ] = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a tenant network."""
    with connect(url, token) as client:
        body = _drop_none(
            name=name, tenant_id=resolve_id(client, "tenants", tenant), type=type, cidr=cidr,
            gateway=gateway, segmentation_id=segmentation_id,
        )
        created(KINDS["networks"], client.create("networks", **body), output)


# ---- ports -------------------------------------------------------------------------------

NetworkOption = Annotated[str | None, typer.Option(help="Network name or id.")]


@ports_app.command("list")
def ports_list(
    network: NetworkOption = None,
    status: Annotated[str | None, typer.Option(help="DOWN, ACTIVE or ERROR.")] = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List ports with their binding and status."""
    _list("ports", output, url, token, network=network, status=status)


@ports_app.command("create")
def ports_create(
    network: Annotated[str, typer.Option(help="Network name or id.")],
    name: Annotated[str | None, typer.Argument()] = None,
    ip: Annotated[
        list[str] | None, typer.Option(help="Address (repeat; default: allocated).")
    ] = None,
    mac: Annotated[str | None, typer.Option(help="Default: allocated.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind to this host (name or id; admin).")] = None,
    interface: Annotated[str | None, typer.Option(help="The VM's interface on that host.")] = None,
    vm_id: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a bound port to become ACTIVE (0: don't).")
    ] = 0,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a port on a network (bound when --host and --interface are given)."""
    with connect(url, token) as client:
        body = _drop_none(
            network_id=resolve_id(client, "networks", network), name=name, ips=ip or None,
            mac=mac, host_id=resolve_id(client, "hosts", host), interface=interface, vm_id=vm_id,
        )
        item = client.create("ports", **body)
        if wait > 0 and host is not None:
            item = client.wait_port_active(item["id"], timeout=wait)
            if item["status"] != "ACTIVE":
                raise CliError(
                    f"port {item['id']} is still {item['status']} after {wait:g}s "
                    "(hint: `ovs-fabric status` shows the host's state)"
                )
        created(KINDS["ports"], item, output)


# ---- load balancers ----------------------------------------------------------------------


def parse_backend(text: str) -> dict[str, Any]:
    """IP:PORT[:WEIGHT] -> a backend body."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise CliError(f"backend {text!r}: expected IP:PORT or IP:PORT:WEIGHT")
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise CliError(f"backend {text!r}: PORT and WEIGHT are numbers") from None
    weight = {"weight": numbers[1]} if len(numbers) > 1 else {}
    return {"ip": parts[0], "port": numbers[0], **weight}


@lbs_app.command("list")
def lbs_list(
    network: NetworkOption = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List load balancers with their backends' health."""
    _list("lbs", output, url, token, network=network)


@lbs_app.command("create")
def lbs_create(
    name: Annotated[str, typer.Argument()],
    network: Annotated[str, typer.Option(help="Network name or id.")],
    vip: Annotated[str, typer.Option(help="The virtual IP, inside the network.")],
    port: Annotated[int, typer.Option(help="The VIP's L4 port.")],
    protocol: Annotated[str, typer.Option(help="tcp or udp.")] = "tcp",
    backend: Annotated[
        list[str] | None, typer.Option(help="IP:PORT[:WEIGHT] (repeat).")
    ] = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create an L4 load balancer."""
    backends = [parse_backend(text) for text in backend or []]
    with connect(url, token) as client:
        body = {"name": name, "network_id": resolve_id(client, "networks", network), "vip": vip,
                "port": port, "protocol": protocol, "backends": backends}
        created(KINDS["lbs"], client.create("load-balancers", **body), output)


for _kind, _group_app in (("hosts", hosts_app), ("tenants", tenants_app),
                          ("networks", networks_app), ("ports", ports_app), ("lbs", lbs_app)):
    _add_generic_commands(_group_app, KINDS[_kind])


def register(app: typer.Typer) -> None:
    app.add_typer(hosts_app, name="hosts")
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(networks_app, name="networks")
    app.add_typer(ports_app, name="ports")
    app.add_typer(lbs_app, name="lbs")
