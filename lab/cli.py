"""`ovs-fabric lab`: the local multi-host lab, the service, a demo topology, proof of isolation.

`lab up` builds simulated hosts (network namespaces with their own OVS), starts
the service on its embedded default (SQLite) and applies a topology through the
REST API, as an orchestration tool would. It then pings every VM from every VM
and prints which reaches which next to what isolation demands, and keeps
serving until Ctrl-C (or exits at once with --once).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.client import ApiError, FabricClient
from api.launcher import ServiceProcess, ServiceStartError
from lab.hosts import Lab, SimVM, cleanup_stale
from lab.topology import Topology, TopologyError, load_topology

lab_app = typer.Typer(help="Run the local multi-host lab.", no_args_is_help=True)
console = Console()

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "topologies" / "lab.yaml"
LAB_PREFIX = "ofl"


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def apply_topology(client: FabricClient, lab: Lab, topo: Topology) -> dict[str, SimVM]:
    """Register the lab's hosts and create the topology's tenants, networks and VMs."""
    host_ids: dict[str, str] = {}
    sim_hosts = {}
    for spec in topo.hosts:
        sim = lab.add_host(
            spec.name,
            tunnel_ip=lab.next_tunnel_ip() if spec.tunnel else None,
            uplink=spec.uplink,
        )
        sim_hosts[spec.name] = sim
        host_ids[spec.name] = client.create("hosts", **sim.facts.registration())["id"]

    vms: dict[str, SimVM] = {}
    port_ids: dict[str, str] = {}
    for tenant in topo.tenants:
        tenant_id = client.create("tenants", name=tenant.name)["id"]
        for net in tenant.networks:
            network_id = client.create(
                "networks", tenant_id=tenant_id, name=net.name, type=net.type, cidr=net.cidr
            )["id"]
            prefix_len = int(net.cidr.split("/")[1])
            for vm in net.vms:
                port = client.create("ports", network_id=network_id, name=vm.name, ips=[vm.ip])
                sim_vm = sim_hosts[vm.host].add_vm(
                    vm.name, mac=port["mac"], ip=vm.ip, prefix_len=prefix_len
                )
                client.update(
                    "ports",
                    port["id"],
                    host_id=host_ids[vm.host],
                    interface=sim_vm.host_interface,
                    vm_id=f"lab-{vm.name}",
                )
                vms[vm.name] = sim_vm
                port_ids[vm.name] = port["id"]
    for name, port_id in port_ids.items():
        port = client.wait_port_active(port_id, timeout=30)
        if port["status"] != "ACTIVE":
            raise RuntimeError(f"port of VM {name} did not become ACTIVE: {port}")
    return vms


def reachability(
    vms: dict[str, SimVM], pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], bool]:
    """Ping every pair at once (a blocked pair costs its full timeout)."""
    def reaches(pair: tuple[str, str]) -> bool:
        target = vms[pair[1]].ip
        assert target is not None, "every lab VM has an address"
        return vms[pair[0]].ping(target, count=2, timeout=2)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = pool.map(reaches, pairs)
        return dict(zip(pairs, results, strict=True))


def render_matrix(
    names: list[str], seen: dict[tuple[str, str], bool], expected: dict[tuple[str, str], bool]
) -> Table:
    table = Table(title="Who reaches whom (ping), rows = source")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="center")
    for src in names:
        cells = []
        for dst in names:
            if src == dst:
                cells.append("·")
                continue
            ok = seen[(src, dst)] == expected[(src, dst)]
            mark = "reach" if seen[(src, dst)] else "-"
            cells.append(f"[green]{mark}[/green]" if ok else f"[bold red]{mark}![/bold red]")
        table.add_row(src, *cells)
    return table


@lab_app.command("up")
def lab_up(
    topology: Annotated[Path, typer.Option(help="Topology YAML file.")] = DEFAULT_TOPOLOGY,
    workdir: Annotated[Path, typer.Option(help="Where the lab keeps its state.")] = Path("var/lab"),
    api_port: Annotated[int, typer.Option(help="REST API port on 127.0.0.1.")] = 8080,
    once: Annotated[bool, typer.Option(help="Exit after the demo instead of serving.")] = False,
) -> None:
    """Bring up the lab, the service and the topology; show isolation; serve until Ctrl-C."""
    try:
        topo = load_topology(topology)
    except TopologyError as exc:
        _fail(str(exc))
    cleanup_stale(LAB_PREFIX)
    # The lab is rebuilt from scratch on every run, and so is its database.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    service = ServiceProcess(workdir.resolve() / "service", api_port=api_port)
    with Lab(prefix=LAB_PREFIX, workdir=workdir.resolve() / "hosts") as lab:
        try:
            console.print(f"Starting the service on {service.base_url} ...")
            service.start()
        except ServiceStartError as exc:
            _fail(str(exc))
        try:
            with FabricClient(service.base_url, service.admin_token) as client:
                console.print(f"Building {len(topo.hosts)} hosts and applying {topology.name} ...")
                vms = apply_topology(client, lab, topo)
            expected = topo.expected_reachability()
            seen = reachability(vms, sorted(expected))
            console.print(render_matrix(sorted(vms), seen, expected))
            wrong = sorted(pair for pair in expected if seen[pair] != expected[pair])
            if wrong:
                console.print(f"[bold red]isolation/reachability broken for {wrong}[/bold red]")
            else:
                console.print(
                    "[bold green]OK:[/bold green] every VM reaches exactly the VMs of its own "
                    "network (VLAN over the trunk, VXLAN over the underlay); other tenants "
                    "and networks are unreachable."
                )
            if once:
                raise typer.Exit(1 if wrong else 0)
            console.print(
                f"\nREST API: {service.base_url}/docs  admin token: {service.admin_token}\n"
                f"service log: {service.log_path}\nCtrl-C stops the service and removes the lab."
            )
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(1) and service.running:
                    pass
        except typer.Exit:
            raise
        except (ApiError, RuntimeError) as exc:  # click's Exit is a RuntimeError too: above
            console.print(f"[red]error:[/red] {exc}\nservice log tail:\n{service.log_tail()}")
            raise typer.Exit(1) from None
        finally:
            service.stop()


@lab_app.command("clean")
def lab_clean() -> None:
    """Remove namespaces and OVS processes left behind by an earlier lab run."""
    cleanup_stale(LAB_PREFIX)
    console.print("lab leftovers removed")
