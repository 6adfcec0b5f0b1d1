"""A switch that stops answering: reported at once, and its silence judges no backend.

Three hosts on one VXLAN network: the client on h1, a backend on h2 (the switch
that falls silent) and one on h3. h2's ovs-vswitchd is frozen with SIGSTOP: its
connections stay open, it just never answers again, as a hung switch does.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.eventually import eventually
from tests.support.fabric import Fabric
from tests.support.load_balancer import BACKEND_PORT, FAST_HEALTH, LISTENER, VIP, Servers
from tests.support.reliability import record

pytestmark = pytest.mark.e2e

# Issue 9, item 6.
LIVENESS_BOUND = 3.0


@pytest.fixture
def servers() -> Iterator[Servers]:
    found = Servers()
    try:
        yield found
    finally:
        found.close()


def _openflow_connected(fabric: Fabric, host: str) -> bool:
    return bool(fabric.client.get("hosts", fabric.host_ids[host])["openflow_connected"])


def _backends(fabric: Fabric, lb_id: str) -> dict[str, dict[str, Any]]:
    lb = fabric.client.get("load-balancers", lb_id)
    return {b["ip"]: b for b in lb["backends"]}


def _health(fabric: Fabric, lb_id: str) -> dict[str, bool]:
    """Each backend's verdict: whether it gets connections."""
    return {ip: b["healthy"] for ip, b in _backends(fabric, lb_id).items()}


def test_silent_switch_is_reported_within_bound_and_condemns_no_backend(
    fabric: Fabric, servers: Servers
) -> None:
    for name in ("h1", "h2", "h3"):
        fabric.add_host(name)
    tenant = fabric.client.create("tenants", name="acme")["id"]
    net = fabric.network(tenant, "web", "vxlan", "10.5.0.0/24")
    vms = {
        "c": fabric.add_vm("h1", net, "c", "10.5.0.10", wait=False),
        "b2": fabric.add_vm("h2", net, "b2", "10.5.0.12", wait=False),
        "b3": fabric.add_vm("h3", net, "b3", "10.5.0.13", wait=False),
    }
    fabric.wait_active(*vms)
    servers.start(vms["b2"])
    servers.start(vms["b3"])
    lb = fabric.client.create(
        "load-balancers",
        network_id=net,
        name="web",
        vip=VIP,
        protocol="tcp",
        port=LISTENER,
        backends=[
            {"port_id": fabric.port_ids[name], "port": BACKEND_PORT, "weight": 1}
            for name in ("b2", "b3")
        ],
        health_check=FAST_HEALTH,
    )
    both = {"10.5.0.12": True, "10.5.0.13": True}
    eventually(lambda: _health(fabric, lb["id"]) == both, what="both backends healthy")
    assert _openflow_connected(fabric, "h2")

    h2 = fabric.hosts["h2"]
    vswitchd = h2.ovs.pid("vswitchd")
    assert vswitchd is not None
    os.kill(vswitchd, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        eventually(
            lambda: not _openflow_connected(fabric, "h2"),
            what="h2 reported disconnected",
            timeout=30,
            interval=0.05,
        )
        reported = time.monotonic() - frozen
        record(
            "Liveness",
            "ovs-vswitchd SIGSTOPped: seconds until the API shows openflow_connected=false",
            reported,
            "s",
            requirement=f"<= {LIVENESS_BOUND:g} s",
        )
        assert reported <= LIVENESS_BOUND, f"reported after {reported:.2f} s"

        # Probes for b2 go through h2's silent switch: for several times the health
        # check's fall window they give no verdict. b2 keeps its last verdict and
        # stays in the group on the client's host; b3 (healthy switch) is untouched.
        samples = []
        deadline = time.monotonic() + 6 * FAST_HEALTH["interval"] * FAST_HEALTH["fall"]
        while time.monotonic() < deadline:
            samples.append(_health(fabric, lb["id"]))
            time.sleep(0.1)
        assert all(sample == both for sample in samples), samples
        record(
            "Liveness",
            "LB health samples taking a backend out while probes through the silent switch fail",
            sum(sample != both for sample in samples),
            f"of {len(samples)} samples",
            requirement="0",
        )
        groups = "\n".join(fabric.hosts["h1"].dump_groups())
        assert "10.5.0.12" in groups and "10.5.0.13" in groups, groups
        assert not _openflow_connected(fabric, "h2")
        # The API says why b2's health is not known; b3's is.
        shown = _backends(fabric, lb["id"])
        assert shown["10.5.0.12"]["health"] == "unknown", shown
        assert fabric.host_ids["h2"] in shown["10.5.0.12"]["health_unknown"], shown
        assert (shown["10.5.0.13"]["health"], shown["10.5.0.13"]["health_unknown"]) == (
            "healthy",
            None,
        ), shown
    finally:
        os.kill(vswitchd, signal.SIGCONT)

    eventually(lambda: _openflow_connected(fabric, "h2"), what="h2 reconnected", timeout=30)
    eventually(
        lambda: _backends(fabric, lb["id"])["10.5.0.12"]["health"] == "healthy",
        what="b2's health known again",
    )
    assert vms["c"].wait_for_ping("10.5.0.12", timeout=30)


def test_host_whose_ovsdb_server_stops_is_reported_within_bound(fabric: Fabric) -> None:
    a, _b = fabric.vm_pair("vxlan", "10.30.0.0/24")
    h2 = fabric.hosts["h2"]
    assert _openflow_connected(fabric, "h2")
    h2.ovs.stop_ovsdb()
    try:
        stopped = time.monotonic()
        eventually(
            lambda: not _openflow_connected(fabric, "h2"),
            what="h2 reported disconnected",
            timeout=30,
            interval=0.05,
        )
        reported = time.monotonic() - stopped
        record(
            "Liveness",
            "ovsdb-server stopped: seconds until the API shows openflow_connected=false",
            reported,
            "s",
            requirement=f"<= {LIVENESS_BOUND:g} s",
        )
        assert reported <= LIVENESS_BOUND, f"reported after {reported:.2f} s"

        def ovsdb_reported() -> bool:
            host = fabric.client.get("hosts", fabric.host_ids["h2"])
            return host["ovsdb_connected"] is False and bool(host["last_error"])

        # Reported right after the switch (which is reported first, before OVSDB is tried).
        eventually(ovsdb_reported, what="h2's OVSDB reported unreachable")
    finally:
        h2.start_ovs()
    eventually(lambda: _openflow_connected(fabric, "h2"), what="h2 reconnected", timeout=30)
    assert a.wait_for_ping("10.30.0.2", timeout=30)
