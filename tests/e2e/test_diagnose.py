"""The connectivity diagnosis against a running lab: every cause injected, named, undone.

One lab for the whole module (tests/support/diagnose_lab.py): two hosts joined by a
VLAN trunk and a VXLAN underlay, the service as a child process with the periodic
full comparison pushed out of the way (OVS_FABRIC_RECONCILE_INTERVAL=3600) so that an
injected drift stays until the test undoes it. Every test leaves the lab healthy
again and proves it with a reachable diagnosis. The VM-not-running cause needs a
libvirt domain: it is proven in tests/e2e/test_libvirt.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from api.client import ApiError, FabricClient
from lab.hosts import SimHost
from lab.netns import run
from tests.support import diagnose_lab
from tests.support.diagnose_lab import DEAD_BACKEND_PORT, DEAD_VIP, VIP, DiagnoseLab
from tests.support.eventually import eventually
from tests.support.fabric import lab_and_service
from tests.support.load_balancer import Servers

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiagnoseLab]:
    workdir = tmp_path_factory.mktemp("diagnose")
    with (
        lab_and_service(
            workdir / "service", extra_env={"OVS_FABRIC_RECONCILE_INTERVAL": "3600"}
        ) as fabric,
        Servers() as servers,
    ):
        yield diagnose_lab.build(fabric, servers)


def diagnose(world: DiagnoseLab, src: str, dst: str, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = world.fabric.client.request(
        "POST", "/diagnose", json={"src": src, "dst": dst, **body}
    )
    return result


def host(world: DiagnoseLab, name: str) -> SimHost:
    return world.fabric.hosts[name]


def assert_cause(world: DiagnoseLab, src: str, dst: str, cause: str, **body: Any) -> dict[str, Any]:
    found = diagnose(world, src, dst, **body)
    assert not found["reachable"], found
    assert found["cause"] == cause, found
    assert found["explanation"] and found["fix"], found
    return found


def healed(world: DiagnoseLab, src: str, dst: str, **body: Any) -> None:
    """The lab is healthy again: the diagnosis says reachable (the service may need a pass)."""
    eventually(lambda: diagnose(world, src, dst, **body)["reachable"], f"{src} -> {dst} healed")


@contextmanager
def frozen(pid: int | None) -> Iterator[None]:
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _hops(found: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(h["host"], h["egress"], h["out_interface"]) for h in found["path"]]


# ---- healthy paths ----------------------------------------------------------------------------


def test_healthy_pairs_are_reachable_with_their_path(world: DiagnoseLab) -> None:
    vms = world.vms
    same_host = diagnose(world, "a1", "b1")
    assert same_host["reachable"] and same_host["cause"] is None, same_host
    assert _hops(same_host) == [("h1", "port", vms["b1"].host_interface)]
    assert same_host["path"][0]["tables"][0]["name"] == "classify"
    assert same_host["path"][0]["switch_trace"] == "agrees"

    vlan = diagnose(world, "a1", vms["c1"].ip or "")  # named by its address
    assert vlan["reachable"], vlan
    assert _hops(vlan) == [("h1", "uplink", "trunk0"), ("h2", "port", vms["c1"].host_interface)]
    assert vlan["path"][0]["next_host"] == "h2" and vlan["path"][0]["segment"] > 0
    assert [h["switch_trace"] for h in vlan["path"]] == ["agrees", "agrees"]

    vxlan = diagnose(world, world.fabric.port_ids["x1"], "x2", proto="udp", port=53)
    assert vxlan["reachable"], vxlan
    (first, second) = vxlan["path"]
    assert (first["egress"], first["next_host"]) == ("tunnel", "h2")
    assert first["remote_ip"] == host(world, "h2").tunnel_ip
    assert (second["host"], second["port_id"]) == ("h2", world.fabric.port_ids["x2"])

    vip = diagnose(world, "a1", VIP, proto="tcp", port=80)
    assert vip["reachable"], vip
    assert vip["dst"]["kind"] == "vip" and vip["path"][0]["groups"], vip
    assert vip["path"][-1]["port_id"] == world.fabric.port_ids["c1"]


def test_a_diagnosis_reads_and_changes_nothing(world: DiagnoseLab) -> None:
    def state() -> tuple[object, ...]:
        switches = tuple(
            (
                sorted(h.dump_flows()),
                sorted(h.dump_groups()),
                h.vsctl(
                    "--format=json",
                    "--columns=name,ofport,external_ids,options,type",
                    "list",
                    "Interface",
                ),
                h.vsctl(
                    "--format=json",
                    "--columns=name,fail_mode,protocols,ports,controller",
                    "list",
                    "Bridge",
                ),
            )
            for h in world.fabric.hosts.values()
        )
        return (world.fabric.client.request("GET", "/revision"), switches)

    before = state()
    for src, dst, body in (
        ("a1", "c1", {}),
        ("a1", VIP, {"proto": "tcp", "port": 80}),
        ("x1", "x2", {}),
        ("a1", "u1", {}),
    ):
        diagnose(world, src, dst, **body)
    assert state() == before


def test_bad_input_is_a_problem_and_other_tenants_objects_do_not_exist(
    world: DiagnoseLab,
) -> None:
    client = world.fabric.client
    with pytest.raises(ApiError) as unknown:
        diagnose(world, "a1", "nobody")
    assert unknown.value.status == 404 and "nobody" in unknown.value.detail
    with pytest.raises(ApiError) as invalid:
        diagnose(world, "a1", "c1", proto="sctp")
    assert invalid.value.status == 422
    with pytest.raises(ApiError) as vip_source:
        diagnose(world, VIP, "a1")
    assert vip_source.value.status == 422 and "source" in vip_source.value.detail
    response = client._http.post("/diagnose", json={"src": "a1"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"

    token = client.create(f"tenants/{world.tenants['u']}/tokens", name="diag")["token"]
    with FabricClient(world.fabric.service.base_url, token) as tenant_u:
        # 10.1.0.11 is a1's address in t's network, and u1's in u's: for u it is u1 itself.
        with pytest.raises(ApiError) as itself:
            tenant_u.request("POST", "/diagnose", json={"src": "u1", "dst": "10.1.0.11"})
        assert itself.value.status == 422 and "source itself" in itself.value.detail
        answers = []
        for name in (world.fabric.port_ids["a1"], "00000000-0000-4000-8000-000000000000"):
            with pytest.raises(ApiError) as hidden:
                tenant_u.request("POST", "/diagnose", json={"src": "u1", "dst": name})
            answers.append((hidden.value.status, hidden.value.detail.replace(name, "X")))
        assert answers[0] == answers[1] and answers[0][0] == 404


# ---- one cause each ----------------------------------------------------------------------------


def test_1_other_tenants_and_networks_by_design(world: DiagnoseLab) -> None:
    assert "another tenant" in assert_cause(world, "a1", "u1", "different_networks")["explanation"]
    assert_cause(world, "a1", "x2", "different_networks")


def test_2_unbound_port_and_interface_off_the_bridge(world: DiagnoseLab) -> None:
    assert_cause(world, "a1", world.lone_port, "port_not_bound")
    h1, tap = host(world, "h1"), world.vms["b1"].host_interface
    h1.vsctl("add-br", "brx", "--", "set", "bridge", "brx", "datapath_type=netdev")
    try:
        h1.vsctl("del-port", "br-int", tap, "--", "add-port", "brx", tap)
        found = assert_cause(world, "a1", "b1", "port_not_bound")
        assert "brx" in found["explanation"], found
    finally:
        h1.vsctl(
            "--if-exists", "del-port", "brx", tap, "--", "--may-exist", "add-port", "br-int", tap
        )
        h1.vsctl("del-br", "brx")
    healed(world, "a1", "b1")


def test_5_switch_disconnected_since_when(world: DiagnoseLab) -> None:
    h2 = host(world, "h2")
    with frozen(h2.ovs.pid("vswitchd")):
        eventually(
            lambda: (
                not world.fabric.client.get("hosts", world.fabric.host_ids["h2"])[
                    "openflow_connected"
                ]
            ),
            "the service to see h2's switch gone",
        )
        found = assert_cause(world, "a1", "c1", "switch_disconnected")
        assert "s ago" in found["explanation"] and found["findings"][0]["host"] == "h2"
    healed(world, "a1", "c1")


def test_6_ovsdb_unreachable(world: DiagnoseLab) -> None:
    with frozen(host(world, "h2").ovs.pid("ovsdb")):
        found = assert_cause(world, "a1", "c1", "ovsdb_unreachable")
        assert found["findings"][0]["host"] == "h2"
    healed(world, "a1", "c1")


def _cookie(found: dict[str, Any], hop: int, table: int) -> str:
    return next(t["cookie"] for t in found["path"][hop]["tables"] if t["table"] == table)


def test_7_missing_and_modified_flows_are_named(world: DiagnoseLab) -> None:
    h1 = host(world, "h1")
    healthy = diagnose(world, "a1", "b1")
    security = _cookie(healthy, 0, 1)  # a1's port security flow
    (line,) = [f for f in h1.dump_flows() if f.startswith(f"cookie={security},")]
    h1.ofctl("del-flows", f"cookie={security}/-1")
    try:
        found = assert_cause(world, "a1", "b1", "flows_differ")
        assert "missing" in found["explanation"] and security[2:] in found["explanation"]
        assert found["path"][0]["switch_trace"] == "disagrees"
    finally:
        h1.ofctl("add-flow", line)
    healed(world, "a1", "b1")

    forward = _cookie(healthy, 0, 8)  # the unicast flow to b1
    (line,) = [f for f in h1.dump_flows() if f.startswith(f"cookie={forward},")]
    actions = line.partition(" actions=")[2]
    h1.ofctl("mod-flows", f"cookie={forward}/-1,table=8 actions=drop")
    try:
        found = assert_cause(world, "a1", "b1", "flows_differ")
        assert "modified" in found["explanation"], found
    finally:
        h1.ofctl("mod-flows", f"cookie={forward}/-1,table=8 actions={actions}")
    healed(world, "a1", "b1")


def test_8_bridge_settings_drift(world: DiagnoseLab) -> None:
    h1 = host(world, "h1")
    h1.vsctl("set", "bridge", "br-int", "fail_mode=standalone")
    try:
        found = assert_cause(world, "a1", "b1", "bridge_settings_drifted")
        assert "fail_mode=standalone" in found["explanation"]
    finally:
        h1.vsctl("set", "bridge", "br-int", "fail_mode=secure")
    healed(world, "a1", "b1")


def test_9_interface_link_down(world: DiagnoseLab) -> None:
    h1, tap = host(world, "h1"), world.vms["b1"].host_interface
    h1.run("ip", "link", "set", tap, "down")
    try:
        found = eventually(
            lambda: (d := diagnose(world, "a1", "b1"))["cause"] == "interface_down" and d,
            "OVS to report the link down",
        )
        assert tap in found["explanation"]
    finally:
        h1.run("ip", "link", "set", tap, "up")
    healed(world, "a1", "b1")

    # A tap that vanished: a VM of its own, since its veth does not come back.
    network = world.fabric.network_ids["nv"]
    gone = world.fabric.add_vm("h1", network, "d1", "10.1.0.60")
    assert diagnose(world, "a1", "d1")["reachable"]
    h1.run("ip", "link", "del", gone.host_interface)
    found = eventually(
        lambda: (d := diagnose(world, "a1", "d1"))["cause"] == "interface_down" and d,
        "OVS to report the device gone",
    )
    assert "vanished" in found["explanation"], found


def test_10_trunk_down_and_no_route_to_the_vxlan_peer(world: DiagnoseLab) -> None:
    fabric_ns = world.fabric.lab.fabric_netns
    run(["ip", "-n", fabric_ns, "link", "set", "h2-tr", "down"])
    try:
        found = eventually(
            lambda: (d := diagnose(world, "a1", "c1"))["cause"] == "underlay_down" and d,
            "OVS to report the trunk down",
        )
        assert "trunk0" in found["explanation"] and found["findings"][0]["host"] == "h2"
    finally:
        run(["ip", "-n", fabric_ns, "link", "set", "h2-tr", "up"])
    healed(world, "a1", "c1")

    h1 = host(world, "h1")
    address = f"{h1.tunnel_ip}/24"
    h1.run("ip", "addr", "del", address, "dev", "br-phy")
    try:
        found = eventually(
            lambda: (d := diagnose(world, "x1", "x2"))["cause"] == "underlay_down" and d,
            "OVS to lose its route to h2",
        )
        assert host(world, "h2").tunnel_ip in found["explanation"], found
    finally:
        h1.run("ip", "addr", "replace", address, "dev", "br-phy")
    healed(world, "x1", "x2")


def test_11_vip_without_healthy_backend(world: DiagnoseLab) -> None:
    found = assert_cause(world, "a1", DEAD_VIP, "no_healthy_backend", proto="tcp", port=80)
    assert f":{DEAD_BACKEND_PORT}" in found["explanation"]
    # Undo: a server on the backend; the health check brings it up, the verdict follows.
    with Servers() as servers:
        servers.start(world.vms["b1"], DEAD_BACKEND_PORT)
        healed(world, "a1", DEAD_VIP, proto="tcp", port=80)


def test_12_frame_dropped_by_a_flow_the_service_did_not_install(world: DiagnoseLab) -> None:
    h1 = host(world, "h1")
    mac = world.vms["b1"].mac
    h1.ofctl("add-flow", f"table=8,priority=300,cookie=0x1234,dl_dst={mac},actions=drop")
    try:
        found = assert_cause(world, "a1", "b1", "foreign_flow_drop")
        assert "0x0000000000001234" in found["explanation"], found
    finally:
        h1.ofctl("del-flows", "cookie=0x1234/-1")
    healed(world, "a1", "b1")


def test_4_source_address_is_found_in_what_the_switch_dropped(world: DiagnoseLab) -> None:
    # Last in the module on purpose: the datapath remembers the spoofed frames for ~10 s
    # after they stop, and b1's diagnoses would see them.
    b1 = world.vms["b1"]
    b1.run("ip", "addr", "add", "10.1.0.77/24", "dev", "eth0")
    sender = diagnose_lab.keep_sending(b1, world.vms["c1"].ip or "", source="10.1.0.77")
    try:
        found = eventually(
            lambda: (d := diagnose(world, "b1", "c1"))["cause"] == "source_address_mismatch" and d,
            "the spoofed source to be seen",
        )
        assert "10.1.0.77" in found["explanation"], found
    finally:
        sender.kill()
        sender.wait()
        b1.run("ip", "addr", "del", "10.1.0.77/24", "dev", "eth0")
