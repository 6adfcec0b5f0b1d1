"""Mutual TLS on both southbound protocols, with hosts reached over a management network.

Each host is a namespace with `mg0` on the lab's management network; the
service runs in the root namespace, which has the network's first address.
Hosts are prepared exactly as the README says an operator prepares a
hypervisor: `ovs-fabric pki host NAME` on the CA machine, then `ovs-fabric host
prepare` on the host (here: inside its namespace, against its own OVSDB).
The service reaches each host's OVSDB at `ssl:MGMT-IP:6640`; each switch
reaches the service's OpenFlow TLS listener at `ssl:CONTROLLER-IP:PORT`.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api import pki
from api.launcher import ServiceProcess, free_tcp_port
from lab.hosts import HOST_UNDERLAY_IF, HOST_UPLINK_IF, Lab, SimHost
from tests.support.eventually import eventually
from tests.support.fabric import Fabric, fabric_of
from tests.support.reliability import record

pytestmark = pytest.mark.e2e

OVSDB_PORT = 6640
OVS_FABRIC = [sys.executable, "-c", "from api.cli import main; main()"]
SCENARIO = "TLS"
# A TLS failure must show on the host "within seconds": this is how long a test waits.
REPORT_BOUND = 10.0


def ovs_fabric(host: SimHost | None, *args: str) -> str:
    """Run the `ovs-fabric` CLI: on the CA machine (here) or on a host (its namespace)."""
    if host is None:
        done = subprocess.run(
            [*OVS_FABRIC, *args], capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout
    return host.run(*OVS_FABRIC, *args, timeout=60).stdout


def prepare(host: SimHost, pki_dir: Path, *, name: str | None = None) -> str:
    """`ovs-fabric host prepare` inside the host, as the README's steps say."""
    assert host.management_ip and host.tunnel_ip
    return ovs_fabric(
        host,
        "host", "prepare",
        "--name", name or host.name,
        "--pki-dir", str(pki_dir),
        "--ovsdb-listen", f"{host.management_ip}:{OVSDB_PORT}",
        "--underlay-ip", f"{host.tunnel_ip}/24",
        "--underlay-if", HOST_UNDERLAY_IF,
        "--trunk", HOST_UPLINK_IF,
        # A simulated host's OVSDB lives in its own run directory; on a real
        # hypervisor the default local socket is meant and --db is left out.
        "--db", host.ovsdb_remote,
    )  # fmt: skip


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    root = tmp_path / "pki"
    ovs_fabric(None, "pki", "init", "--dir", str(root))
    return root


@pytest.fixture
def controller_ip(lab: Lab) -> str:
    return lab.enable_management()


ServiceFactory = Callable[..., ServiceProcess]


@pytest.fixture
def service_factory(
    tmp_path: Path, pki_dir: Path, controller_ip: str
) -> Iterator[ServiceFactory]:
    services: list[ServiceProcess] = []

    def start(*, require_tls: bool) -> ServiceProcess:
        controller = pki.PkiDir(pki_dir).controller
        service = ServiceProcess(
            tmp_path / f"service{len(services)}",
            extra_env={
                "OVS_FABRIC_RECONCILE_INTERVAL": "2",
                "OVS_FABRIC_TLS_PRIVATE_KEY": str(controller.private_key),
                "OVS_FABRIC_TLS_CERTIFICATE": str(controller.certificate),
                "OVS_FABRIC_TLS_CA_CERTIFICATE": str(pki.PkiDir(pki_dir).ca.certificate),
                "OVS_FABRIC_OPENFLOW_TLS_LISTEN_HOST": controller_ip,
                "OVS_FABRIC_OPENFLOW_TLS_PORT": str(free_tcp_port()),
                "OVS_FABRIC_OPENFLOW_ADVERTISE": controller_ip,
                "OVS_FABRIC_REQUIRE_TLS": "true" if require_tls else "false",
            },
        )
        services.append(service)
        service.start()
        return service

    yield start
    for service in services:
        service.stop()


@pytest.fixture
def service(service_factory: ServiceFactory) -> ServiceProcess:
    """TLS required: the deployment the issue asks for."""
    return service_factory(require_tls=True)


@pytest.fixture
def fabric(lab: Lab, service: ServiceProcess) -> Iterator[Fabric]:
    with fabric_of(lab, service) as found:
        yield found


def add_tls_host(fabric: Fabric, pki_dir: Path, name: str) -> SimHost:
    """A host prepared for TLS and registered with an ssl: remote."""
    host = fabric.lab.add_host(
        name,
        tunnel_ip=fabric.lab.next_tunnel_ip(),
        management=True,
        prepare_underlay=False,
    )
    ovs_fabric(None, "pki", "host", name, "--dir", str(pki_dir))
    first = prepare(host, pki_dir)
    assert "changed: SSL" in first and "changed: OVSDB listener" in first, first
    assert "nothing to change" in prepare(host, pki_dir), "host prepare is idempotent"
    register(fabric, host, f"ssl:{host.management_ip}:{OVSDB_PORT}")
    return host


def register(fabric: Fabric, host: SimHost, remote: str) -> str:
    body: dict[str, Any] = {"name": host.name, "ovsdb_remote": remote}
    if host.tunnel_ip:
        body["tunnel_ip"] = host.tunnel_ip
    if host.uplink:
        body["uplink"] = host.uplink
    host_id = str(fabric.client.create("hosts", **body)["id"])
    fabric.hosts[host.name] = host
    fabric.host_ids[host.name] = host_id
    return host_id


def host_status(fabric: Fabric, name: str) -> dict[str, Any]:
    return fabric.client.get("hosts", fabric.host_ids[name])


def wait_error(
    fabric: Fabric, name: str, expected: str, *, since: float, case: str
) -> dict[str, Any]:
    """Wait until host `name` reports a last_error containing `expected`; record how long
    it took since `since` (registration, or the change that broke TLS) for `case`."""
    status = eventually(
        lambda: (s := host_status(fabric, name)) and expected in (s["last_error"] or "") and s,
        f"host {name} reports {expected!r} (last: {host_status(fabric, name)})",
        timeout=REPORT_BOUND,
    )
    record(
        SCENARIO,
        f"{case} -> clear last_error on the host",
        time.monotonic() - since,
        "s",
        requirement=f"reported, never a silent retry (test waits <= {REPORT_BOUND:g} s)",
    )
    return status


def register_and_wait_error(
    fabric: Fabric, host: SimHost, remote: str, expected: str, *, case: str
) -> dict[str, Any]:
    """Register `host` at `remote`, then `wait_error` for `expected` timed from then."""
    since = time.monotonic()
    register(fabric, host, remote)
    return wait_error(fabric, host.name, expected, since=since, case=case)


def test_all_hosts_over_tls_carry_traffic_and_isolation_holds(
    fabric: Fabric, pki_dir: Path
) -> None:
    for name in ("h1", "h2"):
        add_tls_host(fabric, pki_dir, name)
    c = fabric.client
    red = c.create("tenants", name="red")["id"]
    blue = c.create("tenants", name="blue")["id"]
    red_vx = fabric.network(red, "red-vx", "vxlan", "10.2.0.0/24")
    red_vlan = fabric.network(red, "red-vlan", "vlan", "10.1.0.0/24")
    blue_vx = fabric.network(blue, "blue-vx", "vxlan", "10.2.0.0/24")
    r1 = fabric.add_vm("h1", red_vx, "r1", "10.2.0.11", wait=False)
    r2 = fabric.add_vm("h2", red_vx, "r2", "10.2.0.12", wait=False)
    r3 = fabric.add_vm("h1", red_vlan, "r3", "10.1.0.13", wait=False)
    fabric.add_vm("h2", red_vlan, "r4", "10.1.0.14", wait=False)
    # blue re-uses red's addresses: b1 has r1's address, on r2's host.
    b1 = fabric.add_vm("h2", blue_vx, "b1", "10.2.0.11", wait=False)
    fabric.wait_active("r1", "r2", "r3", "r4", "b1")

    for host in fabric.hosts.values():
        status = host_status(fabric, host.name)
        assert status["ovsdb_connected"] and status["openflow_connected"], status
        assert status["last_error"] is None, status
        # The switch's controller connection is TLS, and it is up.
        target = host.vsctl("get-controller", "br-int")
        assert target.startswith("ssl:"), target

        def controllers(host: SimHost = host) -> list[list[Any]]:
            listed = host.vsctl("--format=json", "--columns=target,is_connected",
                                "list", "controller")  # fmt: skip
            rows: list[list[Any]] = json.loads(listed)["data"]
            return rows

        # vswitchd refreshes is_connected with its periodic status update.
        eventually(
            lambda: (rows := controllers()) and all(r[0].startswith("ssl:") and r[1] for r in rows),
            f"{host.name}'s only controller is ssl: and connected ({controllers()})",
        )

    assert r1.ping("10.2.0.12"), "red VXLAN h1 -> h2 over a TLS-managed fabric"
    assert r3.ping("10.1.0.14"), "red VLAN h1 -> h2 over a TLS-managed fabric"
    capture = b1.start_tcpdump("icmp or arp")
    try:
        assert r2.ping("10.2.0.11"), "r2 reaches r1 (red), not b1 (blue, same address)"
        assert not b1.ping("10.2.0.12", count=3, timeout=3), "blue never reaches red"
    finally:
        lines = capture.stop()
    leaked = [ln for ln in lines if r2.mac in ln or "tell 10.2.0.12" in ln]
    assert not leaked, leaked

    # A switch that stops answering is seen through the TLS relay as without it,
    # and once it answers again it reconnects over TLS by itself.
    h2 = fabric.hosts["h2"]
    pid = h2.ovs.pid("vswitchd")
    assert pid is not None
    since = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        eventually(
            lambda: not host_status(fabric, "h2")["openflow_connected"],
            "h2 shown disconnected while its vswitchd is stopped",
            timeout=10,
        )
        record(
            SCENARIO,
            "vswitchd SIGSTOPped, switch behind the TLS listener -> openflow_connected=false",
            time.monotonic() - since,
            "s",
            requirement="<= 3 s in test_liveness; here reported (test waits <= 10 s)",
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    eventually(
        lambda: host_status(fabric, "h2")["openflow_connected"],
        "h2 reconnects over TLS once vswitchd runs again",
        timeout=30,
    )
    assert r1.ping("10.2.0.12"), "traffic flows again after the reconnect"


def _expired_host_pair(pki_dir: Path, name: str, target_dir: Path) -> None:
    """A key and certificate for `name` from our CA whose validity ended yesterday."""
    ca = pki.PkiDir(pki_dir).ca
    ca_key = serialization.load_pem_private_key(ca.private_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    cert = pki.build_leaf(
        name, key, ca_key, pki.load_certificate(ca.certificate),
        now=long_ago, days=29, dns_name=name,
    )  # fmt: skip
    target_dir.mkdir(parents=True, exist_ok=True)
    pair = pki.PkiDir(target_dir).host(name)
    pair.private_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.PkiDir(target_dir).ca.certificate.write_bytes(ca.certificate.read_bytes())


def test_hosts_that_fail_tls_are_refused_and_reported(
    fabric: Fabric, pki_dir: Path, tmp_path: Path
) -> None:
    """Each way TLS to a host can fail shows as a clear last_error within seconds."""
    lab = fabric.lab

    def bare_host(name: str) -> SimHost:
        return lab.add_host(
            name, tunnel_ip=lab.next_tunnel_ip(), management=True, prepare_underlay=False
        )

    # A certificate from a foreign CA (the host was prepared against another PKI).
    foreign_dir = tmp_path / "foreign"
    ovs_fabric(None, "pki", "init", "--dir", str(foreign_dir))
    ovs_fabric(None, "pki", "host", "hforeign", "--dir", str(foreign_dir))
    foreign = bare_host("hforeign")
    prepare(foreign, foreign_dir)
    # A certificate from our CA, but another host's (h1's) name.
    ovs_fabric(None, "pki", "host", "h1", "--dir", str(pki_dir))
    wrong = bare_host("hwrong")
    prepare(wrong, pki_dir, name="h1")
    # A certificate from our CA for the right name, expired.
    expired_dir = tmp_path / "expired"
    _expired_host_pair(pki_dir, "hexpired", expired_dir)
    expired = bare_host("hexpired")
    prepare(expired, expired_dir)
    # A plaintext host: OVSDB on ptcp:, as before TLS (TLS is required here).
    plain = bare_host("hplain")
    plain.vsctl("--no-wait", "set-manager", f"ptcp:{OVSDB_PORT}:{plain.management_ip}")
    # A host whose OVSDB listener is plaintext although it is registered as ssl:.
    mislabelled = bare_host("hmislabel")
    mislabelled.vsctl("--no-wait", "set-manager", f"ptcp:{OVSDB_PORT}:{mislabelled.management_ip}")

    cases = [
        (foreign, "ssl", "the host's certificate is not issued by our CA", "OVSDB: foreign CA"),
        (wrong, "ssl", "the host's certificate is for 'h1', not 'hwrong'", "OVSDB: wrong name"),
        (expired, "ssl", "the host's certificate has expired", "OVSDB: expired certificate"),
        (plain, "tcp", "refused: plaintext OVSDB remote", "OVSDB: tcp: host, TLS required"),
        (mislabelled, "ssl", "closed the connection during the TLS handshake",
         "OVSDB: ssl: host with a plaintext listener"),
    ]  # fmt: skip
    started = {}
    for host, scheme, _, _ in cases:
        started[host.name] = time.monotonic()
        register(fabric, host, f"{scheme}:{host.management_ip}:{OVSDB_PORT}")
    for host, _, expected, case in cases:
        status = wait_error(fabric, host.name, expected, since=started[host.name], case=case)
        assert not status["ovsdb_connected"] and not status["openflow_connected"], status
        # Refused means not managed: nothing was written to the host's OVSDB.
        assert "br-int" not in host.vsctl("list-br").split()

    # A plaintext switch: pointed by hand at the OpenFlow listener with tcp:, it is
    # refused (the plaintext listener is on the service's loopback only).
    tls_port = fabric.service.env["OVS_FABRIC_OPENFLOW_TLS_PORT"]
    controller_ip = fabric.service.env["OVS_FABRIC_OPENFLOW_TLS_LISTEN_HOST"]
    plain.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                "--", "set-controller", "br-int", f"tcp:{controller_ip}:{tls_port}")  # fmt: skip
    refused = f"OpenFlow TLS from {plain.management_ip} refused: the switch does not speak TLS"
    eventually(lambda: refused in fabric.service.log_tail(400), f"service logs {refused!r}")
    assert not host_status(fabric, "hplain")["openflow_connected"]


def test_switch_with_a_foreign_certificate_is_refused_over_openflow(
    lab: Lab, service_factory: ServiceFactory, pki_dir: Path, tmp_path: Path
) -> None:
    """OVSDB is plaintext here (TLS not required), so the service configures the switch;
    the switch's own TLS connection to the OpenFlow listener, with a certificate from
    a foreign CA, is refused and the refusal is shown on its host. With our CA's
    certificate in its SSL table, the same switch is accepted."""
    service = service_factory(require_tls=False)
    with fabric_of(lab, service) as fabric:
        foreign_dir = tmp_path / "foreign"
        ovs_fabric(None, "pki", "init", "--dir", str(foreign_dir))
        ovs_fabric(None, "pki", "host", "hx", "--dir", str(foreign_dir))
        host = lab.add_host(
            "hx", tunnel_ip=lab.next_tunnel_ip(), management=True, prepare_underlay=False
        )
        prepare(host, foreign_dir)
        # The plaintext listener an operator had before moving to TLS, next to pssl:.
        plaintext = f"ptcp:{OVSDB_PORT + 1}:{host.management_ip}"
        host.vsctl("--no-wait", "set-manager", f"pssl:{OVSDB_PORT}:{host.management_ip}",
                   plaintext)  # fmt: skip
        # Wholly foreign: the switch does not trust us, we do not trust it.
        status = register_and_wait_error(
            fabric,
            host,
            f"tcp:{host.management_ip}:{OVSDB_PORT + 1}",
            "the switch refused our certificate: unknown CA",
            case="OpenFlow: switch trusts a foreign CA",
        )
        assert status["ovsdb_connected"] and not status["openflow_connected"], status
        assert host.vsctl("get-controller", "br-int").startswith("ssl:")
        # The switch trusts our CA but shows a certificate from another: we refuse it.
        key, cert = pki.PkiDir(foreign_dir).host("hx").paths()
        our_ca = pki.PkiDir(pki_dir).ca.certificate
        host.vsctl("--no-wait", "set-ssl", str(key), str(cert), str(our_ca))
        since = time.monotonic()
        status = wait_error(
            fabric,
            "hx",
            "the switch's certificate is not issued by our CA",
            since=since,
            case="OpenFlow: switch certificate from a foreign CA",
        )
        assert status["ovsdb_connected"] and not status["openflow_connected"], status

        # The operator finishes the move to TLS: our certificate (host prepare also
        # removes the plaintext listener), then the host re-registered as ssl:.
        ovs_fabric(None, "pki", "host", "hx", "--dir", str(pki_dir))
        since = time.monotonic()
        prepare(host, pki_dir)
        assert host.vsctl("get-manager").split() == [f"pssl:{OVSDB_PORT}:{host.management_ip}"]
        fabric.client.update(
            "hosts", fabric.host_ids["hx"], ovsdb_remote=f"ssl:{host.management_ip}:{OVSDB_PORT}"
        )
        eventually(
            lambda: (s := host_status(fabric, "hx"))["openflow_connected"]
            and s["ovsdb_connected"]
            and s["last_error"] is None
            and s["ovsdb_remote"].startswith("ssl:"),
            f"hx managed over TLS with our CA's certificate ({host_status(fabric, 'hx')})",
            timeout=30,
        )
        record(
            SCENARIO,
            "host prepare with our certificate + host re-registered ssl: -> managed, no error",
            time.monotonic() - since,
            "s",
            requirement="managed (test waits <= 30 s; the switch's reconnect backoff is up to 8 s)",
        )



def test_ssl_host_on_a_service_without_tls_is_reported(
    lab: Lab, controller_ip: str, tmp_path: Path
) -> None:
    """The issue's first finding: an ssl: host on a service with no TLS settings failed
    every pass with a TypeError from the OVS library and showed last_error=null."""
    service = ServiceProcess(
        tmp_path / "plain-service", extra_env={"OVS_FABRIC_RECONCILE_INTERVAL": "2"}
    )
    service.start()
    try:
        with fabric_of(lab, service) as fabric:
            host = lab.add_host("hs", tunnel_ip=None, management=True, uplink=False)
            status = register_and_wait_error(
                fabric,
                host,
                f"ssl:{host.management_ip}:{OVSDB_PORT}",
                "no TLS key, certificate and CA are configured",
                case="OVSDB: ssl: host, service without TLS settings",
            )
            assert not status["ovsdb_connected"], status
            assert "TypeError" not in service.log_tail(400)
    finally:
        service.stop()
