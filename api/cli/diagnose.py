"""`ovs-fabric diagnose SRC DST`: can SRC reach DST, hop by hop, and if not the first reason.

SRC and DST are a port id, a VM name, an address (IP or IP@NETWORK) or, as DST, a
load balancer's id or VIP. It asks the running service (POST /api/v1/diagnose).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from api.cli.remote import (
    Output,
    OutputOption,
    TokenOption,
    UrlOption,
    connect,
    console,
    print_json,
)


class Proto(StrEnum):
    icmp = "icmp"
    tcp = "tcp"
    udp = "udp"


def _endpoint(side: dict[str, Any]) -> str:
    where = f" on {side['host']}/{side['interface']}" if side.get("host") else ""
    kind = "VIP" if side["kind"] == "vip" else "port"
    return f"{side['asked']} ({kind} {side['ip'] or '-'} in {side['network']}{where})"


def _hop_lines(hop: dict[str, Any]) -> list[str]:
    tables = " > ".join(f"{t['table']}:{t['name']}[{t['cookie']}]" for t in hop["tables"])
    groups = f" group {','.join(str(g) for g in hop['groups'])}" if hop["groups"] else ""
    egress = hop["egress"]
    if egress == "port":
        out = f"out {hop['out_interface']} (port {hop['out_port']}) to port {hop['port_id']}"
    elif egress == "uplink":
        out = (
            f"out uplink {hop['out_interface']} (VLAN {hop['segment']}) to host {hop['next_host']}"
        )
    elif egress == "tunnel":
        out = (
            f"out tunnel {hop['out_interface']} (VNI {hop['segment']}, "
            f"{hop['remote_ip']}) to host {hop['next_host']}"
        )
    else:
        out = egress
    trace = {
        "agrees": "[green]switch trace agrees[/green]",
        "disagrees": "[red]switch trace disagrees[/red]",
        "unavailable": "[yellow]no switch trace[/yellow]",
    }[hop["switch_trace"]]
    return [
        f"  {hop['hop']}. host {hop['host']} {hop['bridge']}, in {hop['in_interface']} "
        f"(port {hop['in_port']}): {trace}",
        f"     {tables}{groups}",
        f"     {out}",
    ]


def show(result: dict[str, Any]) -> None:
    target = result["proto"] + (f"/{result['port']}" if result.get("port") else "")
    console.print(f"from {_endpoint(result['src'])}")
    console.print(f"to   {_endpoint(result['dst'])}, {target}")
    if result["path"]:
        console.print("path:")
        for hop in result["path"]:
            for line in _hop_lines(hop):
                console.print(line, soft_wrap=True)
    if result["reachable"]:
        console.print("[green]reachable[/green]")
        return
    console.print(f"[red]NOT reachable[/red]: {result['cause']}")
    console.print(f"  why: {result['explanation']}", soft_wrap=True)
    console.print(f"  fix: {result['fix']}", soft_wrap=True)
    for finding in result["findings"][1:]:
        console.print(f"  also: {finding['cause']}: {finding['explanation']}", soft_wrap=True)


def diagnose(
    src: Annotated[str, typer.Argument(help="Port id, VM name, IP or IP@NETWORK.")],
    dst: Annotated[
        str, typer.Argument(help="Port id, VM name, IP or IP@NETWORK, load balancer id or VIP.")
    ],
    proto: Annotated[Proto, typer.Option("--proto", help="The packet's protocol.")] = Proto.icmp,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Destination port (tcp/udp).")
    ] = None,
    output: OutputOption = Output.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Can SRC reach DST? The path hop by hop; if not, the first cause and its fix."""
    body: dict[str, Any] = {"src": src, "dst": dst, "proto": proto.value}
    if port is not None:
        body["port"] = port
    with connect(url, token) as client:
        result = client.request("POST", "/diagnose", json=body)
    if output is Output.json:
        print_json(result)
    else:
        show(result)
    if not result["reachable"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(diagnose)
