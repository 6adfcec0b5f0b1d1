"""`ovs-fabric lab`: a playground on one machine: simulated hosts, the service, VMs.

`lab up` builds simulated hosts (network namespaces with their own OVS), starts
the service on its embedded default (SQLite) and applies a topology through the
REST API, as an orchestration tool would. It pings every VM from every VM and
prints which reaches which next to what isolation demands. Then it keeps the lab
and the service running: in the foreground until Ctrl-C, or with --detach in the
background until `lab down`. Meanwhile `lab status`, `lab vm add|rm`, `lab ping`,
`lab shell` and `lab env` work on it (lab/state.py says how they find it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from api.client import ApiError, FabricClient
from api.launcher import ServiceProcess, ServiceStartError
from lab.control import LabControl
from lab.hosts import Lab, LabError, SimVM, cleanup_stale
from lab.netns import in_netns, list_netns
from lab.state import (
    LOG_FILE,
    STATE_FILE,
    LabState,
    LabStateError,
    VmState,
    load_state,
    pid_alive,
    request,
    require_state,
    state_dir,
)
from lab.topology import Topology, TopologyError, load_topology

lab_app = typer.Typer(help="The local multi-host lab: a playground.", no_args_is_help=True)
vm_app = typer.Typer(help="VMs (namespaces) in the running lab.", no_args_is_help=True)
lab_app.add_typer(vm_app, name="vm")
console = Console()

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "topologies" / "lab.yaml"
LAB_PREFIX = "ofl"
READY_TIMEOUT = 300.0
DOWN_TIMEOUT = 90.0

StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="OVS_FABRIC_LAB_STATE_DIR",
                 help="Where the running lab keeps its state (default /run/ovs-fabric/lab)."),
]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@dataclass(frozen=True)
class LabVm:
    vm: SimVM
    network: str
    port_id: str


def apply_topology(client: FabricClient, lab: Lab, topo: Topology) -> dict[str, LabVm]:
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

    vms: dict[str, LabVm] = {}
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
                vms[vm.name] = LabVm(sim_vm, net.name, port["id"])
    for name, lab_vm in vms.items():
        port = client.wait_port_active(lab_vm.port_id, timeout=30)
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


# ---- lab up ------------------------------------------------------------------------------


@lab_app.command("up")
def lab_up(
    topology: Annotated[Path, typer.Option(help="Topology YAML file.")] = DEFAULT_TOPOLOGY,
    workdir: Annotated[Path, typer.Option(help="Where the lab keeps its files.")] = Path("var/lab"),
    api_port: Annotated[int, typer.Option(help="REST API port on 127.0.0.1.")] = 8080,
    once: Annotated[bool, typer.Option(help="Exit after the demo instead of serving.")] = False,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Leave the lab and the service running in "
                           "the background (until `lab down`).")
    ] = False,
    state_directory: StateDirOption = None,
    prefix: Annotated[str, typer.Option(hidden=True, help="Namespace name prefix.")] = LAB_PREFIX,
) -> None:
    """Bring up the lab, the service and the topology; show isolation; keep serving."""
    try:
        topo = load_topology(topology)
    except TopologyError as exc:
        _fail(str(exc))
    directory = state_dir(state_directory)
    running = load_state(directory)
    if running is not None and pid_alive(running.pid):
        _fail(f"a lab already runs (pid {running.pid}, {running.url}); `ovs-fabric lab down` first")
    if detach:
        _detach(topology, workdir, api_port, directory, prefix)
        return
    cleanup_stale(prefix)
    _remove_state(directory)
    # The lab is rebuilt from scratch on every run, and so is its database.
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    service = ServiceProcess(workdir / "service", api_port=api_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Lab(prefix=prefix, workdir=workdir / "hosts") as lab:
            state = LabState(pid=os.getpid(), prefix=lab.prefix, workdir=str(workdir),
                             url=service.base_url, token=service.admin_token)
            state.save(directory)
            try:
                _serve(lab, service, topo, topology, state, directory, stop, once=once)
            finally:
                state.phase = "stopping"
                state.save(directory)
                service.stop()
    finally:
        _remove_state(directory)
        shutil.rmtree(workdir, ignore_errors=True)


def _serve(lab: Lab, service: ServiceProcess, topo: Topology, topology: Path, state: LabState,
           directory: Path, stop: threading.Event, *, once: bool) -> None:
    try:
        console.print(f"Starting the service on {service.base_url} ...")
        service.start()
        with FabricClient(service.base_url, service.admin_token) as client:
            console.print(f"Building {len(topo.hosts)} hosts and applying {topology.name} ...")
            vms = apply_topology(client, lab, topo)
        state.hosts = {name: host.netns for name, host in lab.hosts.items()}
        state.vms = {
            name: VmState(name=name, host=v.vm.host.name, netns=v.vm.netns, network=v.network,
                          port_id=v.port_id, ip=v.vm.ip, mac=v.vm.mac, created_port=True)
            for name, v in vms.items()
        }
        expected = topo.expected_reachability()
        seen = reachability({name: v.vm for name, v in vms.items()}, sorted(expected))
        if vms:
            console.print(render_matrix(sorted(vms), seen, expected))
        wrong = sorted(pair for pair in expected if seen[pair] != expected[pair])
        if wrong:
            console.print(f"[bold red]isolation/reachability broken for {wrong}[/bold red]")
        elif vms:
            console.print(
                "[bold green]OK:[/bold green] every VM reaches exactly the VMs of its own "
                "network (VLAN over the trunk, VXLAN over the underlay); other tenants "
                "and networks are unreachable."
            )
        if once:
            raise typer.Exit(1 if wrong else 0)
        control = LabControl(lab, state, directory, shutdown=stop.set)
        control.start()
        state.phase = "ready"
        state.save(directory)
        console.print(
            f"\nREST API: {service.base_url}/docs  admin token: {service.admin_token}\n"
            f"service log: {service.log_path}\n"
            "`ovs-fabric lab down` (or Ctrl-C in the foreground) stops the service and "
            "removes the lab.", soft_wrap=True,
        )
        try:
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(1) and service.running:
                    pass
        finally:
            control.stop()
        if not service.running and not stop.is_set():
            console.print(f"[red]the service exited[/red]; log tail:\n{service.log_tail()}")
            raise typer.Exit(1)
    except typer.Exit:
        raise
    except (ApiError, RuntimeError, ServiceStartError, LabError,
            httpx.HTTPError) as exc:  # click's Exit is a RuntimeError too: above
        state.phase, state.error = "failed", str(exc).splitlines()[0]
        state.save(directory)
        console.print(f"[red]error:[/red] {exc}\nservice log tail:\n{service.log_tail()}")
        raise typer.Exit(1) from None


def _detach(topology: Path, workdir: Path, api_port: int, directory: Path, prefix: str) -> None:
    """Run `lab up` as a background process of its own; show its output until it is ready."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / LOG_FILE
    command = [
        sys.executable, "-c", "from lab.cli import lab_app; lab_app()", "up",
        "--topology", str(topology.resolve()), "--workdir", str(workdir.resolve()),
        "--api-port", str(api_port), "--state-dir", str(directory), "--prefix", prefix,
    ]
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=Path.cwd(),
            env={**os.environ, "COLUMNS": os.environ.get("COLUMNS", "100")},
        )
    shown = 0
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        text = log_path.read_text(errors="replace")
        sys.stdout.write(text[shown:])
        sys.stdout.flush()
        shown = len(text)
        state = load_state(directory)
        if state is not None and state.pid == child.pid and state.phase == "ready":
            console.print(
                f"[green]lab running in the background[/green] (pid {child.pid}); "
                f"`eval $(ovs-fabric lab env)` points the CLI at it; `ovs-fabric lab down` "
                "removes it.", soft_wrap=True,
            )
            return
        if child.poll() is not None:
            _fail(f"the lab exited with status {child.returncode} before it was ready "
                  f"(log: {log_path})")
        if time.monotonic() > deadline:
            child.send_signal(signal.SIGTERM)
            _fail(f"the lab was not ready within {READY_TIMEOUT:g}s (log: {log_path})")
        time.sleep(0.3)


def _remove_state(directory: Path) -> None:
    for name in (STATE_FILE, "control.sock"):
        (directory / name).unlink(missing_ok=True)


# ---- the running lab ------------------------------------------------------------------------


def _running(directory: Path) -> LabState:
    try:
        state = require_state(directory)
    except LabStateError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
    if not pid_alive(state.pid):
        _fail(f"the lab's process {state.pid} is gone; `ovs-fabric lab down` removes what is left")
    return state


@lab_app.command("status")
def lab_status(state_directory: StateDirOption = None) -> None:
    """Show the running lab: its process, the service, hosts and VMs."""
    directory = state_dir(state_directory)
    state = _running(directory)
    console.print(f"lab {state.prefix}: pid {state.pid}, {state.phase}, service {state.url}, "
                  f"files {state.workdir}", soft_wrap=True)
    ports: dict[str, dict[str, Any]] = {}
    hosts: list[dict[str, Any]] = []
    try:
        with FabricClient(state.url, state.token, timeout=5) as client:
            hosts = client.list_all("hosts")
            ports = {p["id"]: p for p in client.list_all("ports")}
    except (ApiError, httpx.HTTPError) as exc:
        console.print(f"[red]the service does not answer:[/red] {exc}")
    host_table = Table(title="hosts", title_justify="left")
    for column in ("host", "netns", "ovsdb", "openflow", "last error"):
        host_table.add_column(column)
    for host in hosts:
        host_table.add_row(host["name"], state.hosts.get(host["name"], "-"),
                           _yes(host["ovsdb_connected"]), _yes(host["openflow_connected"]),
                           host["last_error"] or "")
    console.print(host_table)
    vm_table = Table(title="VMs", title_justify="left")
    for column in ("vm", "host", "network", "ip", "mac", "port"):
        vm_table.add_column(column)
    for vm in state.vms.values():
        status = ports.get(vm.port_id, {}).get("status", "gone")
        colour = "green" if status == "ACTIVE" else "yellow"
        vm_table.add_row(vm.name, vm.host, vm.network, vm.ip or "-", vm.mac,
                         f"[{colour}]{status}[/{colour}]")
    console.print(vm_table)


def _yes(value: bool) -> str:
    return "[green]yes[/green]" if value else "[red]no[/red]"


@lab_app.command("env")
def lab_env(state_directory: StateDirOption = None) -> None:
    """Print the shell lines that point `ovs-fabric` at the running lab's service."""
    state = _running(state_dir(state_directory))
    typer.echo(f"export OVS_FABRIC_URL={state.url}\nexport OVS_FABRIC_TOKEN={state.token}")


@lab_app.command("down")
def lab_down(state_directory: StateDirOption = None) -> None:
    """Stop the running lab and its service and remove every trace of them."""
    directory = state_dir(state_directory)
    try:
        state = load_state(directory)
    except LabStateError:
        state = None
    if state is not None and pid_alive(state.pid):
        with contextlib.suppress(LabStateError):
            request(directory, "shutdown")
        deadline = time.monotonic() + DOWN_TIMEOUT
        while pid_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(state.pid):  # the control socket did not work: ask by signal
            os.kill(state.pid, signal.SIGTERM)
            while pid_alive(state.pid) and time.monotonic() < deadline + 30:
                time.sleep(0.2)
        if pid_alive(state.pid):
            _fail(f"the lab's process {state.pid} does not stop")
    # Whatever a dead owner left behind: namespaces, OVS daemons, files.
    if state is not None:
        cleanup_stale(state.prefix)
        shutil.rmtree(state.workdir, ignore_errors=True)
        leftovers = [ns for ns in list_netns() if ns.startswith(state.prefix)]
        if leftovers:
            _fail(f"namespaces left behind: {leftovers}")
    _remove_state(directory)
    (directory / LOG_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
    console.print("lab removed" if state is not None else "no lab was running")


@lab_app.command("clean")
def lab_clean() -> None:
    """Remove namespaces and OVS processes left behind by an earlier lab run."""
    cleanup_stale(LAB_PREFIX)
    console.print("lab leftovers removed")


# ---- VMs ---------------------------------------------------------------------------------


def _network(client: FabricClient, ref: str) -> dict[str, Any]:
    matches = [n for n in client.list_all("networks") if ref in (n["name"], n["id"])]
    if len(matches) != 1:
        names = sorted(n["name"] for n in client.list_all("networks"))
        _fail(f"network {ref!r} " + ("is ambiguous: give its id" if matches else
                                     f"does not exist (networks: {', '.join(names) or 'none'})"))
    return matches[0]


@vm_app.command("add")
def vm_add(
    name: Annotated[str, typer.Argument(help="VM name (1-12 lowercase letters/digits).")],
    host: Annotated[str, typer.Option(help="Lab host (e.g. h1).")],
    network: Annotated[str, typer.Option(help="Network name or id.")],
    ip: Annotated[str | None, typer.Option(help="Address (default: the API allocates).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for ACTIVE.")] = 30.0,
    state_directory: StateDirOption = None,
) -> None:
    """Create a VM namespace on a lab host and bind its port through the API.

    A port of that name already in the network (e.g. from `ovs-fabric apply`) is
    used; otherwise one is created."""
    directory = state_dir(state_directory)
    state = _running(directory)
    try:
        with FabricClient(state.url, state.token) as client:
            net = _network(client, network)
            hosts = {h["name"]: h["id"] for h in client.list_all("hosts")}
            if host not in hosts:
                _fail(f"no host {host!r} (hosts: {', '.join(sorted(hosts))})")
            existing = [p for p in client.list_all("ports", network_id=net["id"])
                        if p["name"] == name]
            port = existing[0] if existing else client.create(
                "ports", network_id=net["id"], name=name, **({"ips": [ip]} if ip else {}))
            address = port["ips"][0] if port["ips"] else None
            prefix_len = ipaddress.IPv4Network(net["cidr"]).prefixlen if net["cidr"] else 24
            try:
                made = request(directory, "vm_add", name=name, host=host, mac=port["mac"],
                               ip=address, prefix_len=prefix_len, network=net["name"],
                               port_id=port["id"], created_port=not existing)
            except LabStateError:
                if not existing:
                    client.delete("ports", port["id"])
                raise
            client.update("ports", port["id"], host_id=hosts[host],
                          interface=made["interface"], vm_id=f"lab-{name}")
            bound = client.wait_port_active(port["id"], timeout=timeout)
    except (ApiError, httpx.HTTPError, LabStateError) as exc:
        _fail(str(exc))
    colour = "green" if bound["status"] == "ACTIVE" else "red"
    console.print(f"VM {name} on {host}: {address or 'no address'} {port['mac']} in network "
                  f"{net['name']}, port [{colour}]{bound['status']}[/{colour}]")
    if bound["status"] != "ACTIVE":
        raise typer.Exit(1)


@vm_app.command("rm")
def vm_rm(name: Annotated[str, typer.Argument()], state_directory: StateDirOption = None) -> None:
    """Remove a VM: its namespace, and its port (unbound if the lab did not make it)."""
    directory = state_dir(state_directory)
    state = _running(directory)
    vm = state.vms.get(name)
    if vm is None:
        _fail(f"no VM {name!r} in the lab (VMs: {', '.join(sorted(state.vms)) or 'none'})")
        return
    try:
        request(directory, "vm_rm", name=name)
        with FabricClient(state.url, state.token) as client:
            if vm.created_port:
                client.delete("ports", vm.port_id)
            else:
                client.update("ports", vm.port_id, host_id=None, interface=None, vm_id=None)
    except (ApiError, httpx.HTTPError, LabStateError) as exc:
        _fail(str(exc))
    console.print(f"VM {name} removed")


def _vm(state: LabState, name: str) -> VmState:
    vm = state.vms.get(name)
    if vm is None:
        _fail(f"no VM {name!r} in the lab (VMs: {', '.join(sorted(state.vms)) or 'none'})")
        raise AssertionError  # unreachable
    return vm


@lab_app.command("ping")
def lab_ping(
    source: Annotated[str, typer.Argument(help="VM to ping from.")],
    target: Annotated[str, typer.Argument(help="VM (or IP address) to ping.")],
    count: Annotated[int, typer.Option("--count", "-c")] = 3,
    state_directory: StateDirOption = None,
) -> None:
    """Ping from one VM to another (exit 1 when nothing answers)."""
    state = _running(state_dir(state_directory))
    vm = _vm(state, source)
    if target in state.vms:
        address = state.vms[target].ip
        if address is None:
            _fail(f"VM {target} has no address")
    else:
        try:
            address = str(ipaddress.IPv4Address(target))
        except ValueError:
            _fail(f"no VM {target!r} in the lab (VMs: {', '.join(sorted(state.vms)) or 'none'})")
    result = subprocess.run(
        in_netns(vm.netns, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1",
                            str(address)]),
        capture_output=True, text=True, check=False, timeout=count * 2 + 10,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    console.print("\n".join(lines[-2:]) or result.stderr.strip())
    ok = result.returncode == 0
    console.print(f"{source} -> {target} ({address}): "
                  + ("[green]reachable[/green]" if ok else "[red]unreachable[/red]"))
    raise typer.Exit(0 if ok else 1)


@lab_app.command(
    "shell", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def lab_shell(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The VM.")],
    state_directory: StateDirOption = None,
) -> None:
    """A shell inside the VM's namespace (or run the COMMAND given after the name)."""
    vm = _vm(_running(state_dir(state_directory)), name)
    command = list(ctx.args) or [os.environ.get("SHELL") or "/bin/bash"]
    argv = in_netns(vm.netns, command)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
