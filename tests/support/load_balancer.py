"""The load-balancer lab: backends answering with their name, clients counting who served.

Backends are tiny TCP (or UDP) servers in VM namespaces that answer every line
(datagram) with their own name, so a client sees which backend served each message
of a connection (each UDP flow). `build` makes the e2e tests' lab (tests/e2e/test_load_balancer.py),
which bench/lb_bench.py measures too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from lab.hosts import SimVM
from lab.netns import in_netns
from tests.support.eventually import eventually
from tests.support.fabric import Fabric

VIP = "10.5.0.100"
LISTENER = 80
BACKEND_PORT = 8080
FAST_HEALTH = {"interval": 0.5, "timeout": 0.4, "rise": 2, "fall": 2}

_SERVER = r"""
import socketserver, sys
name, port = sys.argv[1], int(sys.argv[2])
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for _line in self.rfile:
            self.wfile.write(name.encode() + b"\n")
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 256
Server(("0.0.0.0", port), Handler).serve_forever()
"""

_UDP_SERVER = r"""
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
while True:
    _data, peer = s.recvfrom(2048)
    s.sendto(name.encode(), peer)
"""

# Sends one datagram per flow and reads the answer (a few tries: a flow's first
# datagram may wait for neighbour resolution). Each flow has its own socket, so its
# own source port, unless `source_port` (then every flow uses that one, in turn
# toward each of `targets`). Prints one JSON object: for each flow, which backend
# answered ("" if none) and the address the answer came from.
_UDP_CLIENT = r"""
import json, socket, sys
targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in sys.argv[1].split(",")]
count, source_port = int(sys.argv[2]), int(sys.argv[3])
served, sources = [], []
for i in range(count):
    target = targets[i % len(targets)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", source_port))
        s.settimeout(0.5)
        name, source = "", ""
        for _try in range(4):
            s.sendto(b"hello", target)
            try:
                data, peer = s.recvfrom(2048)
            except socket.timeout:
                continue
            name, source = data.decode(), f"{peer[0]}:{peer[1]}"
            break
    served.append(name)
    sources.append(source)
print(json.dumps({"served": served, "sources": sources}))
"""

# Opens `count` connections one after the other; on each sends `messages` lines
# and reads the answers. Prints one JSON object: which backend served each
# connection ("" if it failed), connections answered by more than one backend,
# and the errors seen.
_CLIENT = r"""
import json, socket, sys, time
ip, port, count, messages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pause = float(sys.argv[5])
served, mixed, errors = [], 0, []
for _ in range(count):
    try:
        with socket.create_connection((ip, port), timeout=5) as s:
            f = s.makefile("rwb")
            names = set()
            for _m in range(messages):
                f.write(b"hello\n"); f.flush()
                line = f.readline()
                if not line:
                    raise ConnectionError("closed by peer")
                names.add(line.strip().decode())
                if pause:
                    time.sleep(pause)
            mixed += len(names) > 1
            served.append(sorted(names)[0])
    except OSError as exc:
        served.append("")
        errors.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"served": served, "mixed": mixed, "errors": errors[:20]}))
"""


@dataclass
class Servers:
    """Backend server processes, killed at teardown whatever happens."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    vms: dict[str, SimVM] = field(default_factory=dict)

    def start(
        self, vm: SimVM, port: int = BACKEND_PORT, *, protocol: str = "tcp", key: str = ""
    ) -> None:
        """A server answering with `vm`'s name; `key` (default: the VM's name) for `kill`."""
        key = key or vm.name
        self.vms[key] = vm
        server = _SERVER if protocol == "tcp" else _UDP_SERVER
        cmd = in_netns(vm.netns, [sys.executable, "-c", server, vm.name, str(port)])
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[key] = proc
        listening = "-Hltn" if protocol == "tcp" else "-Hlun"
        eventually(
            lambda: str(port) in vm.run("ss", listening, f"sport = :{port}", check=False).stdout,
            f"the server on {vm.name} to listen",
            timeout=10,
            interval=0.05,
        )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Outcome:
    served: list[str]
    mixed: int
    errors: list[str]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for name in self.served:
            found[name] = found.get(name, 0) + 1
        return found


def connect(
    client: SimVM, count: int, *, messages: int = 3, pause: float = 0.0, ip: str = VIP
) -> Outcome:
    result = client.run(
        sys.executable,
        "-c",
        _CLIENT,
        ip,
        str(LISTENER if ip == VIP else BACKEND_PORT),
        str(count),
        str(messages),
        str(pause),
        timeout=120,
    )
    data = json.loads(result.stdout)
    return Outcome(data["served"], data["mixed"], data["errors"])


@dataclass(frozen=True)
class UdpOutcome:
    served: list[str]  # per flow: the backend that answered, "" if none
    sources: list[str]  # per flow: "ip:port" the answer came from, "" if none

    def counts(self) -> dict[str, int]:
        return Outcome(self.served, 0, []).counts()


def exchange(
    client: SimVM,
    count: int,
    *,
    targets: tuple[str, ...] = (f"{VIP}:{LISTENER}",),
    source_port: int = 0,
) -> UdpOutcome:
    """`count` UDP flows from `client` (each from a new source port, or all from
    `source_port`), to `targets` ("ip:port") in turn."""
    result = client.run(
        sys.executable,
        "-c",
        _UDP_CLIENT,
        ",".join(targets),
        str(count),
        str(source_port),
        timeout=120,
    )
    data = json.loads(result.stdout)
    return UdpOutcome(data["served"], data["sources"])


def start_connect(
    client: SimVM, count: int, *, messages: int, pause: float
) -> subprocess.Popen[str]:
    cmd = in_netns(
        client.netns,
        [sys.executable, "-c", _CLIENT, VIP, str(LISTENER), str(count), str(messages), str(pause)],
    )
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class LbLab:
    fabric: Fabric
    tenant: str
    network: str
    vms: dict[str, SimVM]
    lb: dict[str, Any] = field(default_factory=dict)

    def backends(self, weights: dict[str, int]) -> list[dict[str, Any]]:
        return [
            {"port_id": self.fabric.port_ids[name], "port": BACKEND_PORT, "weight": w}
            for name, w in weights.items()
        ]

    def health(self) -> dict[str, bool]:
        lb = self.fabric.client.get("load-balancers", self.lb["id"])
        by_ip = {vm.ip: name for name, vm in self.vms.items()}
        return {by_ip[b["ip"]]: b["healthy"] for b in lb["backends"]}


# The lab's VMs: name -> address; the client is c, the backends b1..b3.
ADDRESSES = {"c": "10.5.0.10", "b1": "10.5.0.11", "b2": "10.5.0.12", "b3": "10.5.0.13"}


def build(
    fabric: Fabric,
    servers: Servers,
    *,
    health: dict[str, Any] | None = None,
    hosts: dict[str, str] | None = None,
    weights: dict[str, int] | None = None,
    protocol: str = "tcp",
) -> LbLab:
    """Client c and backend b1 on h1, backends b2 and b3 on h2; VXLAN network; LB 1:1:2.

    `hosts` places other VMs (VM name -> host name), `weights` picks the backends
    (a server is started in each) and their weights; `protocol` the listener's and
    the servers' (tcp or udp).
    """
    hosts = hosts or {"c": "h1", "b1": "h1", "b2": "h2", "b3": "h2"}
    weights = weights or {"b1": 1, "b2": 1, "b3": 2}
    for host in dict.fromkeys(hosts.values()):
        fabric.add_host(host)
    tenant = fabric.client.create("tenants", name="acme")["id"]
    net = fabric.network(tenant, "web", "vxlan", "10.5.0.0/24")
    vms = {
        name: fabric.add_vm(host, net, name, ADDRESSES[name], wait=False)
        for name, host in hosts.items()
    }
    fabric.wait_active(*vms)
    for name in weights:
        servers.start(vms[name], protocol=protocol)
    lab = LbLab(fabric, tenant, net, vms)
    lab.lb = fabric.client.create(
        "load-balancers",
        network_id=net,
        name="web",
        vip=VIP,
        protocol=protocol,
        port=LISTENER,
        backends=lab.backends(weights),
        health_check=health or FAST_HEALTH,
    )
    # Warm the paths (VXLAN neighbour resolution drops a first packet) and wait
    # until the VIP answers.
    assert vms["c"].wait_for_ping(ADDRESSES["b2"])
    answered = (
        (lambda: connect(vms["c"], 1).served != [""])
        if protocol == "tcp"
        else (lambda: exchange(vms["c"], 1).served != [""])
    )
    eventually(answered, timeout=30, what="the VIP to answer")
    return lab
