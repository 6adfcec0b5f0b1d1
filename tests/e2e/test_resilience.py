"""Level-triggered reconciliation: drift, restarts and dead hosts never lose state."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.support.eventually import eventually
from tests.support.fabric import Fabric
from tests.support.metrics import Samples, scrape_service, total

pytestmark = pytest.mark.e2e


def test_ovsdb_drift_is_repaired(fabric: Fabric) -> None:
    a, _b = fabric.vm_pair("vxlan", "10.30.0.0/24")
    h1 = fabric.hosts["h1"]

    h1.vsctl("set", "bridge", "br-int", "fail_mode=standalone")
    eventually(
        lambda: h1.vsctl("get", "bridge", "br-int", "fail_mode").strip() == "secure",
        what="fail_mode",
    )

    tunnels = [p for p in h1.vsctl("list-ports", "br-int").split() if p.startswith("vx")]
    assert tunnels, "no tunnel port on h1"
    h1.vsctl("del-port", "br-int", tunnels[0])
    eventually(lambda: tunnels[0] in h1.vsctl("list-ports", "br-int").split(), what="tunnel port")

    h1.vsctl("del-br", "br-int")
    eventually(
        lambda: a.ping("10.30.0.2", count=1, timeout=1),
        timeout=30,
        what="bridge with its ports and flows",
    )
    assert h1.vsctl("get", "bridge", "br-int", "fail_mode").strip() == "secure"


def test_flows_removed_by_hand_come_back(fabric: Fabric) -> None:
    a, _b = fabric.vm_pair("vxlan", "10.30.0.0/24")
    h1 = fabric.hosts["h1"]
    before = len(h1.dump_flows("br-int"))
    h1.ofctl("del-flows", "br-int")
    assert h1.dump_flows("br-int") == []
    eventually(lambda: len(h1.dump_flows("br-int")) == before, what="flow table")
    assert a.ping("10.30.0.2")


def test_foreign_flow_added_by_hand_is_removed(fabric: Fabric) -> None:
    fabric.vm_pair("vxlan", "10.30.0.0/24")
    h1 = fabric.hosts["h1"]
    h1.ofctl("add-flow", "br-int", "table=0,priority=60000,actions=NORMAL")
    eventually(
        lambda: not [f for f in h1.dump_flows("br-int") if "priority=60000" in f],
        what="foreign flow",
    )


def test_ovs_restart_is_rewired(fabric: Fabric) -> None:
    a, _b = fabric.vm_pair("vlan", "10.30.0.0/24")
    h2 = fabric.hosts["h2"]
    h2.stop_ovs()
    assert not a.ping("10.30.0.2", count=1, timeout=1)
    h2.start_ovs()
    eventually(
        lambda: bool(a.ping("10.30.0.2", count=1, timeout=1)),
        timeout=30,
        what="forwarding after OVS restart",
    )


def test_controller_restart_drops_no_packets(fabric: Fabric) -> None:
    a, _b = fabric.vm_pair("vxlan", "10.30.0.0/24")
    # Warm the path first: OVS's userspace tunnels drop the first packet while they
    # resolve the underlay neighbour, which has nothing to do with a restart.
    assert a.ping("10.30.0.2")
    # 150 pings 20 ms apart (3 s) while the service is stopped and started again.
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", a.netns, "ping", "-c", "150", "-i", "0.02", "-W", "1", "10.30.0.2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    fabric.service.stop()
    log_offset = fabric.service.log_path.stat().st_size
    fabric.service.start()
    out, _ = pinger.communicate(timeout=30)
    assert " 0% packet loss" in out, out
    fabric.wait_active("a", "b")

    # The restarted service read the switches' tables, found them equal to the
    # desired state and changed nothing. Waited for, not slept on: the switches
    # reconnect after their own backoff, which a loaded machine stretches.
    def passes_on_both_switches() -> Samples | None:
        samples = scrape_service(fabric.service)
        done = all(("ovs_fabric_flows", frozenset({("host", h)})) in samples for h in ("h1", "h2"))
        return samples if done else None

    samples = eventually(passes_on_both_switches, what="a reconcile pass on each switch")
    assert total(samples, "ovs_fabric_reconcile_changes_total") == 0, samples
    assert total(samples, "ovs_fabric_reconcile_diff_size_count") >= 2
    with fabric.service.log_path.open() as log:
        log.seek(log_offset)
        after_restart = log.read()
    # (a change would also be logged as "+N/-M flows")
    assert " flows, " not in after_restart, after_restart


def test_unreachable_host_is_reported_and_does_not_block_others(fabric: Fabric) -> None:
    bad = fabric.client.create(
        "hosts", name="ghost", ovsdb_remote="unix:/nonexistent/ovs-fabric/db.sock"
    )
    a, _b = fabric.vm_pair("vxlan", "10.30.0.0/24")
    assert a.ping("10.30.0.2")

    def reported() -> bool:
        host = fabric.client.get("hosts", bad["id"])
        return host["ovsdb_connected"] is False and bool(host["last_error"])

    eventually(reported, what="ghost host status")
    log = fabric.service.log_tail(400)
    assert log.count("host ghost: OVSDB unreachable") == 1, log
