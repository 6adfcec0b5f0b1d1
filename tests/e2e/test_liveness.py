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
from tests.support.load_balancer import FAST_HEALTH, Servers, build
from tests.support.reliability import record

pytestmark = pytest.mark.e2e

# Issue 9, item 6.
LIVENESS_BOUND = 3.0


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as found:
        yield found


def _openflow_connected(fabric: Fabric, host: str) -> bool:
    return bool(fabric.client.get("hosts", fabric.host_ids[host])["openflow_connected"])


def _reported_disconnected_within_bound(fabric: Fabric, host: str, cause: str) -> None:
    """Wait until the API shows `host` disconnected; record and bound how long that took."""
    since = time.monotonic()
    eventually(
        lambda: not _openflow_connected(fabric, host),
        what=f"{host} reported disconnected",
        timeout=30,
        interval=0.05,
    )
    reported = time.monotonic() - since
    record(
        "Liveness",
        f"{cause}: seconds until the API shows openflow_connected=false",
        reported,
        "s",
        requirement=f"<= {LIVENESS_BOUND:g} s",
    )
    assert reported <= LIVENESS_BOUND, f"reported after {reported:.2f} s"


def _backends(fabric: Fabric, lb_id: str) -> dict[str, dict[str, Any]]:
    lb = fabric.client.get("load-balancers", lb_id)
    return {b["ip"]: b for b in lb["backends"]}


def _health(fabric: Fabric, lb_id: str) -> dict[str, bool]:
    """Each backend's verdict: whether it gets connections."""
    return {ip: b["healthy"] for ip, b in _backends(fabric, lb_id).items()}


def test_silent_switch_is_reported_within_bound_and_condemns_no_backend(
    fabric: Fabric, servers: Servers
) -> None:
    lab = build(
        fabric,
        servers,
        hosts={"c": "h1", "b2": "h2", "b3": "h3"},
        weights={"b2": 1, "b3": 1},
    )
    vms, lb = lab.vms, lab.lb
    both = {"10.5.0.12": True, "10.5.0.13": True}
    eventually(lambda: _health(fabric, lb["id"]) == both, what="both backends healthy")
    assert _openflow_connected(fabric, "h2")

    h2 = fabric.hosts["h2"]
    vswitchd = h2.ovs.pid("vswitchd")
    assert vswitchd is not None
    os.kill(vswitchd, signal.SIGSTOP)
    try:
        _reported_disconnected_within_bound(fabric, "h2", "ovs-vswitchd SIGSTOPped")

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
        _reported_disconnected_within_bound(fabric, "h2", "ovsdb-server stopped")

        def ovsdb_reported() -> bool:
            host = fabric.client.get("hosts", fabric.host_ids["h2"])
            return host["ovsdb_connected"] is False and bool(host["last_error"])

        # Reported right after the switch (which is reported first, before OVSDB is tried).
        eventually(ovsdb_reported, what="h2's OVSDB reported unreachable")
    finally:
        h2.start_ovs()
    eventually(lambda: _openflow_connected(fabric, "h2"), what="h2 reconnected", timeout=30)
    assert a.wait_for_ping("10.30.0.2", timeout=30)
