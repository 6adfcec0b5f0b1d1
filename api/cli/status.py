"""`ovs-fabric status`: what needs attention, from one consistent read of the topology.

Hosts with their OVSDB/OpenFlow state and the flows and groups on their switch,
ports that are bound but not ACTIVE, load-balancer backends that are not healthy.
"""

from __future__ import annotations

from typing import Any

import typer

from api.cli.remote import (
    Output,
    OutputOption,
    TokenOption,
    UrlOption,
    cell,
    connect,
    console,
    field,
    print_json,
    short_id,
    table,
)
from api.cli.resources import backend_text


def summarize(topology: dict[str, Any]) -> dict[str, Any]:
    """The parts of the topology `status` shows, as plain data (also its JSON output)."""
    hosts = {h["id"]: h["name"] for h in topology["hosts"]}
    networks = {n["id"]: n["name"] for n in topology["networks"]}
    pending = [
        {
            "name": p["name"], "id": p["id"], "network": networks.get(p["network_id"]),
            "host": hosts.get(p["binding"]["host_id"], short_id(p["binding"]["host_id"])),
            "interface": p["binding"]["interface"], "status": p["status"],
        }
        for p in topology["ports"]
        if p["binding"]["host_id"] is not None and p["status"] != "ACTIVE"
    ]
    backends_down = [
        {"load_balancer": lb["name"], "network": networks.get(lb["network_id"]),
         "backend": backend_text(b), "health": b["health"]}
        for lb in topology["load_balancers"]
        for b in lb["backends"]
        if b["health"] != "healthy"
    ]
    return {
        "revision": topology["revision"],
        "hosts": [
            {key: h.get(key) for key in ("name", "id", "ovsdb_connected", "openflow_connected",
                                         "datapath_id", "flow_count", "group_count", "last_error")}
            for h in topology["hosts"]
        ],
        "ports_not_active": pending,
        "backends_down": backends_down,
        "counts": {kind: len(topology[kind])
                   for kind in ("tenants", "networks", "ports", "load_balancers")},
    }


def status(output: OutputOption = Output.table, url: UrlOption = None,
           token: TokenOption = None) -> None:
    """Hosts (OVSDB, OpenFlow, flows per switch), ports not yet ACTIVE, backends down."""
    with connect(url, token) as client:
        summary = summarize(client.topology())
    if output is Output.json:
        print_json(summary)
        return
    counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in summary["counts"].items())
    console.print(f"revision {summary['revision']}: {counts}")
    if summary["hosts"]:
        console.print(table("hosts", [
            ("host", field("name")), ("ovsdb", field("ovsdb_connected")),
            ("openflow", field("openflow_connected")), ("datapath", field("datapath_id")),
            ("flows", field("flow_count")), ("groups", field("group_count")),
            ("last error", field("last_error")),
        ], summary["hosts"]))
    pending = summary["ports_not_active"]
    if pending:
        console.print(table(f"ports not ACTIVE ({len(pending)})", [
            ("port", lambda p: p["name"] or short_id(p["id"])), ("network", field("network")),
            ("host", field("host")), ("interface", field("interface")),
            ("status", lambda p: f"[yellow]{p['status']}[/yellow]"),
        ], pending))
    else:
        console.print("ports: every bound port is [green]ACTIVE[/green]")
    down = summary["backends_down"]
    if down:
        console.print(table(f"backends not healthy ({len(down)})", [
            ("load balancer", field("load_balancer")), ("network", field("network")),
            ("backend", field("backend")),
        ], down))
    else:
        console.print(f"load balancers: every backend is {cell(True).replace('yes', 'healthy')}")


def register(app: typer.Typer) -> None:
    app.command()(status)
