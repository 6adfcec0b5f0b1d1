"""L4 load balancers proven with real TCP connections between namespaced VMs.

Backends are tiny TCP servers in VM namespaces that answer every line with
their own name, so a client sees which backend served each message of a
connection. The service runs as a child process; health checks are real
probes sent by the service from the VIP through OpenFlow packet-out.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.client import ApiError, FabricClient
from api.store.db import Database
from api.store.principals import CLI, create_token
from lab.hosts import SimVM
from lab.netns import in_netns
from tests.support.eventually import eventually
from tests.support.fabric import Fabric

pytestmark = pytest.mark.e2e

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

    def start(self, vm: SimVM, port: int = BACKEND_PORT) -> None:
        self.vms[vm.name] = vm
        cmd = in_netns(vm.netns, [sys.executable, "-c", _SERVER, vm.name, str(port)])
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[vm.name] = proc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = vm.run("ss", "-Hltn", f"sport = :{port}", check=False)
            if str(port) in probe.stdout:
                return
            time.sleep(0.05)
        raise AssertionError(f"server on {vm.name} did not start")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture
def servers() -> Iterator[Servers]:
    found = Servers()
    try:
        yield found
    finally:
        found.close()


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


def build(fabric: Fabric, servers: Servers, *, health: dict[str, Any] | None = None) -> LbLab:
    """Client c and backend b1 on h1, backends b2 and b3 on h2; VXLAN network; LB 1:1:2."""
    fabric.add_host("h1")
    fabric.add_host("h2")
    tenant = fabric.client.create("tenants", name="acme")["id"]
    net = fabric.network(tenant, "web", "vxlan", "10.5.0.0/24")
    vms = {
        "c": fabric.add_vm("h1", net, "c", "10.5.0.10", wait=False),
        "b1": fabric.add_vm("h1", net, "b1", "10.5.0.11", wait=False),
        "b2": fabric.add_vm("h2", net, "b2", "10.5.0.12", wait=False),
        "b3": fabric.add_vm("h2", net, "b3", "10.5.0.13", wait=False),
    }
    fabric.wait_active(*vms)
    for name in ("b1", "b2", "b3"):
        servers.start(vms[name])
    lab = LbLab(fabric, tenant, net, vms)
    lab.lb = fabric.client.create(
        "load-balancers",
        network_id=net,
        name="web",
        vip=VIP,
        protocol="tcp",
        port=LISTENER,
        backends=lab.backends({"b1": 1, "b2": 1, "b3": 2}),
        health_check=health or FAST_HEALTH,
    )
    # Warm the paths (VXLAN neighbour resolution drops a first packet) and wait
    # until the VIP answers.
    assert vms["c"].wait_for_ping("10.5.0.12")
    eventually(lambda: connect(vms["c"], 1).served != [""], timeout=30, what="the VIP to answer")
    return lab


def test_weighted_split_pinning_and_hairpin(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    outcome = connect(lab.vms["c"], 400, messages=4)
    counts = outcome.counts()
    print("split over 400 connections:", counts)
    assert outcome.errors == [], outcome.errors
    assert counts.get("", 0) == 0, counts
    assert outcome.mixed == 0, "a connection changed backend"
    shares = {name: counts.get(name, 0) / 400 for name in ("b1", "b2", "b3")}
    expected = {"b1": 0.25, "b2": 0.25, "b3": 0.5}
    for name, share in shares.items():
        assert abs(share - expected[name]) <= 0.10, (shares, counts)
    # b1 sits on the client's host: its connections were hairpinned there.
    assert counts["b1"] > 0


def test_other_tenant_cannot_reach_or_resolve_the_vip(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    other = fabric.client.create("tenants", name="intruder")["id"]
    # Same addresses, other tenant's network, on the very host of the client.
    their_net = fabric.network(other, "copy", "vxlan", "10.5.0.0/24")
    intruder = fabric.add_vm("h1", their_net, "x", "10.5.0.10")
    outcome = connect(intruder, 2, messages=1)
    assert outcome.served == ["", ""], outcome
    neighbour = intruder.run("ip", "neigh", "show", VIP, check=False).stdout
    assert "lladdr" not in neighbour, neighbour
    # Nor can it create a load balancer on a network it does not own.
    scoped = _tenant_client(fabric, other)
    with scoped, pytest.raises(ApiError) as err:
        scoped.create(
            "load-balancers",
            network_id=lab.network,
            name="steal",
            vip="10.5.0.101",
            protocol="tcp",
            port=81,
            backends=[{"ip": "10.5.0.11", "port": BACKEND_PORT}],
        )
    # Someone else's network does not exist for this tenant (no existence leak).
    assert err.value.status == 422 and "does not exist" in err.value.detail, err.value
    assert len(fabric.client.list("load-balancers")) == 1


def _tenant_client(fabric: Fabric, tenant_id: str) -> FabricClient:
    database = Database(f"sqlite:///{fabric.service.database_path}")
    try:
        with database.unversioned_write() as session:
            _row, token = create_token(session, actor=CLI, name="tenant", tenant_id=tenant_id)
    finally:
        database.dispose()
    return FabricClient(fabric.service.base_url, token)


def test_dead_backend_leaves_and_returns(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    eventually(
        lambda: lab.health() == {"b1": True, "b2": True, "b3": True},
        timeout=10,
        what="every backend healthy",
    )
    servers.kill("b2")
    # interval 0.5 s x fall 2: out within about a second (a closed port answers RST).
    eventually(lambda: not lab.health()["b2"], timeout=10, what="b2 reported unhealthy")
    h1_groups = "\n".join(fabric.hosts["h1"].dump_groups())
    assert "10.5.0.12" not in h1_groups and "10.5.0.13" in h1_groups, h1_groups
    outcome = connect(lab.vms["c"], 100, messages=2)
    assert outcome.errors == [], outcome.errors
    assert "b2" not in outcome.counts() and outcome.mixed == 0, outcome.counts()

    servers.start(lab.vms["b2"])
    eventually(lambda: lab.health()["b2"], timeout=10, what="b2 healthy again")
    outcome = connect(lab.vms["c"], 100, messages=2)
    assert outcome.errors == [], outcome.errors
    assert outcome.counts().get("b2", 0) > 0, outcome.counts()


def test_long_connection_survives_backend_changes(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    # One connection, 30 messages 0.1 s apart (3 s), while the backends change
    # twice: its backend is removed from the load balancer, then the weights move.
    long_one = start_connect(lab.vms["c"], 1, messages=30, pause=0.1)
    try:
        time.sleep(0.5)
        fabric.client.update("load-balancers", lab.lb["id"], backends=lab.backends({"b3": 5}))
        time.sleep(0.5)
        fabric.client.update(
            "load-balancers", lab.lb["id"], backends=lab.backends({"b1": 3, "b2": 1})
        )
        out, err = long_one.communicate(timeout=30)
    finally:
        if long_one.poll() is None:
            long_one.kill()
            long_one.wait()
    data = json.loads(out)
    assert data["errors"] == [] and data["mixed"] == 0 and data["served"][0], (data, err)
    # New connections follow the new backends.
    outcome = connect(lab.vms["c"], 40, messages=1)
    assert set(outcome.counts()) <= {"b1", "b2"} and outcome.errors == [], outcome


def test_no_usable_backend_is_refused_at_once(fabric: Fabric, servers: Servers) -> None:
    lab = build(fabric, servers)
    for name in ("b1", "b2", "b3"):
        servers.kill(name)
    eventually(lambda: not any(lab.health().values()), timeout=10, what="every backend unhealthy")
    started = time.monotonic()
    outcome = connect(lab.vms["c"], 5, messages=1)
    elapsed = time.monotonic() - started
    assert outcome.served == [""] * 5, outcome
    # Refused (a RST from the VIP), not timed out (the client's timeout is 5 s).
    assert all("ConnectionRefusedError" in e for e in outcome.errors), outcome.errors
    assert elapsed < 5, elapsed
