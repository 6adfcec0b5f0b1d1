"""The simulated lab itself: hosts with answering OVS, clean teardown, restarts, coexistence."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl

from lab.hosts import LAB_REGISTRY, Lab, LabError, SimHost, cleanup_stale
from lab.netns import (
    CaptureError,
    CommandError,
    netns_exists,
    netns_pids,
    process_alive,
    read_pidfile,
)

pytestmark = pytest.mark.ovs

# Names the lab gives to interfaces inside its namespaces; none may leak to the root one.
LAB_INTERFACE_NAMES = {"ul0", "trunk0", "h1-ul", "h1-tr", "h1-vm1", "br-phy"}


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _root_interfaces() -> set[str]:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    return {link["ifname"] for link in links}


def _daemon_pids(host: SimHost) -> dict[str, int | None]:
    return {name: read_pidfile(host.rundir / f"{name}.pid") for name in ("ovsdb", "vswitchd")}


def _assert_gone(
    prefix: str, namespaces: list[str], workdir: Path, pids: list[int], root_before: set[str]
) -> None:
    assert [ns for ns in namespaces if netns_exists(ns)] == []
    assert [pid for pid in pids if process_alive(pid)] == []
    assert _processes_mentioning(str(workdir)) == []
    assert not workdir.exists()
    assert not (LAB_REGISTRY / f"{prefix}.json").exists()
    # Compared with before the lab: other test runs may use such names in the root namespace.
    assert (_root_interfaces() - root_before) & LAB_INTERFACE_NAMES == set()


def test_two_hosts_come_up_with_answering_ovs(lab: Lab) -> None:
    h1 = lab.add_host("h1", tunnel_ip=lab.next_tunnel_ip())
    h2 = lab.add_host("h2", tunnel_ip=lab.next_tunnel_ip(), uplink=False)

    assert (h1.tunnel_ip, h2.tunnel_ip) == ("198.18.0.1", "198.18.0.2")
    for host in (h1, h2):
        show = host.vsctl("show")
        assert "Bridge br-phy" in show and "Port ul0" in show
        assert "br-int" not in show, "br-int is the controller's to create"
        assert host.appctl("version").startswith("ovs-vswitchd")
        # Both daemons really run inside the host's namespace.
        assert set(_daemon_pids(host).values()) <= set(netns_pids(host.netns))
        assert f"{host.tunnel_ip}/24" in host.run("ip", "-br", "addr", "show", "br-phy").stdout
        assert "198.18.0.0/24 dev br-phy" in host.appctl("ovs/route/show")
    # The underlay joins the hosts.
    h1.run("ping", "-c", "1", "-W", "5", str(h2.tunnel_ip))

    assert h1.uplink == "trunk0" and h2.uplink is None
    assert "state UP" in h1.run("ip", "link", "show", "trunk0").stdout
    assert h2.run("ip", "link", "show", "trunk0", check=False).returncode != 0

    # The OVSDB remote works from the root namespace with the ovsdbapp client.
    idl = connection.OvsdbIdl.from_server(h1.ovsdb_remote, "Open_vSwitch")
    conn = connection.Connection(idl=idl, timeout=10)
    try:
        api = impl_idl.OvsdbIdl(conn)
        assert api.list_br().execute(check_error=True) == ["br-phy"]
    finally:
        conn.stop()


def test_vm_is_wired_to_its_host_but_left_unplugged(lab: Lab) -> None:
    host = lab.add_host("h1", tunnel_ip=None)
    vm = host.add_vm("vm1", mac="02:00:00:0A:00:01", ip="10.0.0.1", prefix_len=24, mtu=1400)

    assert (vm.ip, vm.mac, vm.host_interface) == ("10.0.0.1", "02:00:00:0a:00:01", "h1-vm1")
    (eth0,) = json.loads(vm.run("ip", "-j", "addr", "show", "eth0").stdout)
    assert eth0["address"] == "02:00:00:0a:00:01"
    assert eth0["mtu"] == 1400 and eth0["operstate"] == "UP"
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] == [
        ("10.0.0.1", 24)
    ]
    assert "tx-checksumming: off" in vm.run("ethtool", "-k", "eth0").stdout

    (host_end,) = json.loads(host.run("ip", "-j", "link", "show", vm.host_interface).stdout)
    assert host_end["operstate"] == "UP" and host_end["mtu"] == 1400
    assert "master" not in host_end, "the host end must not be attached to anything"
    assert host.vsctl("find", "Interface", f"name={vm.host_interface}") == ""
    assert vm.host_interface not in _root_interfaces()

    with pytest.raises(CaptureError, match="syntax error"):
        vm.start_tcpdump("no such ( filter")

    host.remove_vm("vm1")
    assert not netns_exists(vm.netns)
    assert host.run("ip", "link", "show", vm.host_interface, check=False).returncode != 0


def test_names_are_checked_before_anything_is_built(lab: Lab) -> None:
    with pytest.raises(ValueError, match="reserved"):
        lab.add_host("fab", tunnel_ip=None)
    with pytest.raises(ValueError, match="lowercase"):
        lab.add_host("H-1", tunnel_ip=None)
    host = lab.add_host("hostname12", tunnel_ip=None, uplink=False)
    with pytest.raises(ValueError, match="longer than 15"):
        host.add_vm("vm12345", mac="02:00:00:00:00:01", ip=None)  # hostname12-vm12345
    with pytest.raises(ValueError, match="MAC"):
        host.add_vm("vm1", mac="02:00:00:00:01", ip=None)
    assert host.vms == {}


def test_close_removes_every_namespace_process_veth_and_file(lab_tools: None) -> None:
    root_before = _root_interfaces()
    lab = Lab()
    try:
        host = lab.add_host("h1", tunnel_ip=lab.next_tunnel_ip())
        vm = host.add_vm("vm1", mac="02:00:00:00:00:01", ip="10.0.0.1")
        capture = vm.start_tcpdump("icmp")
        assert capture.running
        prefix, namespaces, workdir = lab.prefix, lab.namespaces, lab.workdir
        pids = [pid for pid in _daemon_pids(host).values() if pid is not None]
        assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
        assert len(namespaces) == 3 and all(netns_exists(ns) for ns in namespaces)
        assert (LAB_REGISTRY / f"{prefix}.json").exists()
        assert json.loads((workdir / "lab.json").read_text())["owner_pid"] == os.getpid()
    finally:
        lab.close()

    assert not capture.running
    _assert_gone(prefix, namespaces, workdir, pids, root_before)
    lab.close()  # idempotent
    with pytest.raises(LabError, match="closed"):
        lab.add_host("h2", tunnel_ip=None)


def test_context_manager_cleans_up_when_the_body_fails(lab_tools: None) -> None:
    root_before = _root_interfaces()
    with pytest.raises(RuntimeError, match="test body failed"), Lab() as lab:
        host = lab.add_host("h1", tunnel_ip=lab.next_tunnel_ip())
        prefix, namespaces, workdir = lab.prefix, lab.namespaces, lab.workdir
        pids = [pid for pid in _daemon_pids(host).values() if pid is not None]
        raise RuntimeError("test body failed")
    assert lab.closed
    _assert_gone(prefix, namespaces, workdir, pids, root_before)


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_ovs_restart_keeps_conf_db_and_loses_flows(lab: Lab, hard: bool) -> None:
    host = lab.add_host("h1", tunnel_ip=lab.next_tunnel_ip())
    host.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev")
    host.ofctl("add-flow", "br-int", "table=0,priority=5,actions=drop")
    assert "priority=5 actions=drop" in host.dump_flows()
    before = _daemon_pids(host)

    host.stop_ovs(hard=hard)
    assert not host.ovs_running
    assert not any(process_alive(pid) for pid in before.values() if pid is not None)
    with pytest.raises(CommandError):
        host.vsctl("show", timeout=2)

    host.start_ovs()
    after = _daemon_pids(host)
    assert host.ovs_running and set(after.values()).isdisjoint(before.values())
    assert host.vsctl("list-br").split() == ["br-int", "br-phy"]  # the same conf.db
    assert not [flow for flow in host.dump_flows() if "priority=5" in flow]
    assert f"{host.tunnel_ip}/24" in host.run("ip", "-br", "addr", "show", "br-phy").stdout
    assert "198.18.0.0/24 dev br-phy" in host.appctl("ovs/route/show")
    host.start_ovs()  # idempotent: nothing restarts
    assert _daemon_pids(host) == after


def test_concurrent_labs_do_not_collide(lab_factory: Callable[..., Lab]) -> None:
    first, second = lab_factory(), lab_factory()
    assert first.prefix != second.prefix
    vms = []
    for lab in (first, second):
        # Identical names and addresses in both labs.
        host = lab.add_host("h1", tunnel_ip="198.18.0.1")
        vms.append(host.add_vm("vm1", mac="02:00:00:00:00:01", ip="10.0.0.1"))
    assert vms[0].netns != vms[1].netns
    assert first.hosts["h1"].rundir != second.hosts["h1"].rundir

    with pytest.raises(LabError, match="in use"):
        Lab(prefix=first.prefix)
    assert first.hosts["h1"].ovs_running, "a refused prefix must not harm its owner"

    first.close()
    survivor = second.hosts["h1"]
    assert survivor.ovs_running and "Bridge br-phy" in survivor.vsctl("show")
    assert all(netns_exists(ns) for ns in second.namespaces)
    assert "10.0.0.1/24" in vms[1].run("ip", "-br", "addr", "show", "eth0").stdout


_CRASHING_LAB = """
import sys, time
from lab.hosts import Lab
lab = Lab(prefix=sys.argv[1])
host = lab.add_host("h1", tunnel_ip=lab.next_tunnel_ip())
host.add_vm("vm1", mac="02:00:00:00:00:01", ip="10.0.0.1")
print(lab.workdir, " ".join(lab.namespaces), flush=True)
time.sleep(300)
"""


def test_cleanup_stale_removes_crashed_labs_and_spares_live_ones(
    lab_factory: Callable[..., Lab],
) -> None:
    root_before = _root_interfaces()
    stem = "ofs" + secrets.token_hex(2)
    live = lab_factory(prefix=stem + "live")
    live_host = live.add_host("h1", tunnel_ip=None)
    crashed_prefix = stem + "dead"
    owner = subprocess.Popen([sys.executable, "-c", _CRASHING_LAB, crashed_prefix],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        workdir_text, *namespaces = owner.stdout.readline().split()
        workdir = Path(workdir_text)
        daemons = [read_pidfile(workdir / "h1" / f"{d}.pid") for d in ("ovsdb", "vswitchd")]
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        # The crash left everything behind, as a crash does.
        assert all(netns_exists(ns) for ns in namespaces)
        assert all(pid is not None and process_alive(pid) for pid in daemons)

        assert cleanup_stale(stem + "*") == [crashed_prefix]

        _assert_gone(crashed_prefix, namespaces, workdir, [p for p in daemons if p], root_before)
        assert live_host.ovs_running and all(netns_exists(ns) for ns in live.namespaces)
        assert cleanup_stale(stem + "*") == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=10)
        cleanup_stale(crashed_prefix)
