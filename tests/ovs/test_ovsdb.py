"""controller.ovsdb against real ovsdb-server + ovs-vswitchd (userspace datapath).

Results are checked with ovs-vsctl / ovs-ofctl / ovsdb-client, not only through
the client under test. Drift made by hand reaches the client's IDL replica
asynchronously, so drift tests call `ensure_*` until it reports a repair (a
bounded wait), then check the repaired state from outside.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.ovsdb import (
    OWNED_KEY,
    BridgeIntent,
    OvsdbClient,
    OvsdbConflict,
    OvsdbUnavailable,
)
from tests.support.eventually import eventually
from tests.support.ovs_instance import OvsInstance, running_ovs, unique_name

pytestmark = [pytest.mark.ovs, pytest.mark.timeout(120)]

DPID = "00000000000000ab"


@pytest.fixture
def ovs() -> Iterator[OvsInstance]:
    with running_ovs() as instance:
        yield instance


@pytest.fixture
def client(ovs: OvsInstance) -> Iterator[OvsdbClient]:
    ovsdb = OvsdbClient(ovs.remote, timeout=5.0)
    try:
        yield ovsdb
    finally:
        ovsdb.close()


@pytest.fixture
def intent(ovs: OvsInstance) -> BridgeIntent:
    return BridgeIntent(
        name=unique_name("brt"),
        datapath_type="netdev",
        datapath_id=DPID,
        controller_targets=(f"unix:{ovs.rundir / 'ofp.sock'}",),
    )


@pytest.fixture
def bridge(client: OvsdbClient, intent: BridgeIntent) -> str:
    assert client.ensure_bridge(intent) is True
    return intent.name


def vsctl_json(ovs: OvsInstance, table: str, record: str, column: str) -> object:
    """A column's value decoded from ovs-vsctl's JSON output: maps become dicts,
    sets and optional values lists."""
    out = ovs.vsctl("--format=json", "--columns", column, "list", table, record)
    return _decode(json.loads(out)["data"][0][0])


def _decode(datum: object) -> object:
    if isinstance(datum, list) and datum and datum[0] == "map":
        return {key: _decode(value) for key, value in datum[1]}
    if isinstance(datum, list) and datum and datum[0] == "set":
        return [_decode(value) for value in datum[1]]
    if isinstance(datum, list) and datum and datum[0] == "uuid":
        return datum[1]
    return datum


def ports_of(ovs: OvsInstance, bridge: str) -> set[str]:
    return set(ovs.vsctl("list-ports", bridge).split())


# ---- bridges ------------------------------------------------------------------------


def assert_bridge_as_intended(ovs: OvsInstance, bridge: str) -> None:
    """The Bridge columns ensure_bridge owns hold what the `intent` fixture asks for."""
    assert vsctl_json(ovs, "Bridge", bridge, "datapath_type") == "netdev"
    assert vsctl_json(ovs, "Bridge", bridge, "fail_mode") == "secure"
    assert vsctl_json(ovs, "Bridge", bridge, "protocols") == "OpenFlow13"
    assert vsctl_json(ovs, "Bridge", bridge, "other_config") == {
        "datapath-id": DPID,
        "disable-in-band": "true",
    }


def test_ensure_bridge_creates_exactly_the_intended_bridge(
    ovs: OvsInstance, client: OvsdbClient, intent: BridgeIntent
) -> None:
    assert client.ensure_bridge(intent) is True

    name = intent.name
    assert ovs.vsctl("list-br").split() == [name]
    assert_bridge_as_intended(ovs, name)
    assert vsctl_json(ovs, "Bridge", name, "external_ids") == {"ovs-fabric-managed": "true"}
    assert ovs.vsctl("get-controller", name).split() == list(intent.controller_targets)
    assert ports_of(ovs, name) == set()  # only the bridge's own local port
    assert vsctl_json(ovs, "Interface", name, "type") == "internal"

    # The pinned datapath id is the one the switch actually uses.
    eventually(lambda: vsctl_json(ovs, "Bridge", name, "datapath_id") == DPID, "datapath_id")
    assert f"dpid:{DPID}" in ovs.ofctl("show", name)
    assert client.datapath_id(name) == eventually(lambda: client.datapath_id(name), "dpid")
    assert client.datapath_id(name) == DPID
    assert client.bridge_exists(name) is True
    assert client.bridge_exists(unique_name("brt")) is False


def test_second_ensure_bridge_changes_nothing(
    ovs: OvsInstance, client: OvsdbClient, intent: BridgeIntent, bridge: str
) -> None:
    # Let ovs-vswitchd finish filling in the row (datapath_id, status) first.
    eventually(lambda: client.datapath_id(bridge), "vswitchd to configure the bridge")
    before = ovs.row_versions("Bridge"), ovs.row_versions("Port")

    assert client.ensure_bridge(intent) is False
    assert client.ensure_bridge(intent) is False

    assert (ovs.row_versions("Bridge"), ovs.row_versions("Port")) == before


@pytest.mark.parametrize(
    "drift",
    [
        pytest.param(lambda br: ["del-br", br], id="bridge-deleted"),
        pytest.param(lambda br: ["set", "Bridge", br, "fail_mode=standalone"], id="fail-mode"),
        pytest.param(lambda br: ["clear", "Bridge", br, "fail_mode"], id="fail-mode-cleared"),
        pytest.param(
            lambda br: ["set", "Bridge", br, "protocols=OpenFlow10,OpenFlow13"], id="protocols"
        ),
        pytest.param(lambda br: ["set-controller", br, "tcp:127.0.0.1:1"], id="controller"),
        pytest.param(lambda br: ["del-controller", br], id="controller-removed"),
        pytest.param(
            lambda br: ["set", "Bridge", br, "other_config:datapath-id=0000000000000001"],
            id="datapath-id",
        ),
        pytest.param(
            lambda br: ["remove", "Bridge", br, "other_config", "disable-in-band"],
            id="in-band",
        ),
        pytest.param(lambda br: ["set", "Bridge", br, "datapath_type=system"], id="datapath-type"),
    ],
)
def test_ensure_bridge_repairs_drift(
    ovs: OvsInstance,
    client: OvsdbClient,
    intent: BridgeIntent,
    bridge: str,
    drift: Callable[[str], list[str]],
) -> None:
    ovs.vsctl("set", "Bridge", bridge, "external_ids:owner-note=kept")
    ovs.vsctl(*drift(bridge))

    eventually(lambda: client.ensure_bridge(intent), "ensure_bridge to repair the drift")

    assert_bridge_as_intended(ovs, bridge)
    assert ovs.vsctl("get-controller", bridge).split() == list(intent.controller_targets)
    external_ids = vsctl_json(ovs, "Bridge", bridge, "external_ids")
    assert isinstance(external_ids, dict)
    assert external_ids["ovs-fabric-managed"] == "true"
    eventually(lambda: vsctl_json(ovs, "Bridge", bridge, "datapath_id") == DPID, "datapath_id")
    assert client.ensure_bridge(intent) is False


# ---- tunnels ------------------------------------------------------------------------


def test_ensure_tunnels_creates_updates_and_removes_only_our_tunnels(
    ovs: OvsInstance, client: OvsdbClient, bridge: str
) -> None:
    vx_a, vx_b, foreign = unique_name("vxa"), unique_name("vxb"), unique_name("vxf")

    def options(interface: str) -> object:
        return vsctl_json(ovs, "Interface", interface, "options")

    ovs.vsctl(
        "add-port", bridge, foreign, "--", "set", "Interface", foreign,
        "type=vxlan", "options:remote_ip=192.0.2.99", "options:key=7",
    )  # fmt: skip

    wanted = {vx_a: ("192.0.2.2", None), vx_b: ("192.0.2.3", "192.0.2.1")}
    assert client.ensure_tunnels(bridge, wanted) is True
    assert client.ensure_tunnels(bridge, wanted) is False

    assert ports_of(ovs, bridge) == {vx_a, vx_b, foreign}
    assert vsctl_json(ovs, "Interface", vx_a, "type") == "vxlan"
    assert options(vx_a) == {"key": "flow", "remote_ip": "192.0.2.2"}
    assert options(vx_b) == {"key": "flow", "remote_ip": "192.0.2.3", "local_ip": "192.0.2.1"}
    assert vsctl_json(ovs, "Interface", vx_a, "external_ids") == {"ovs-fabric-role": "tunnel"}

    # vx_a's peer moved; vx_b's peer left the fabric.
    assert client.ensure_tunnels(bridge, {vx_a: ("192.0.2.20", None)}) is True
    assert ports_of(ovs, bridge) == {vx_a, foreign}
    assert options(vx_a) == {"key": "flow", "remote_ip": "192.0.2.20"}
    assert options(foreign) == {"key": "7", "remote_ip": "192.0.2.99"}

    # A local_ip that is no longer wanted goes away; hand-made options too.
    assert client.ensure_tunnels(bridge, {vx_a: ("192.0.2.20", "192.0.2.1")}) is True
    ovs.vsctl("set", "Interface", vx_a, "options:tos=inherit")
    eventually(
        lambda: client.ensure_tunnels(bridge, {vx_a: ("192.0.2.20", None)}),
        "ensure_tunnels to repair the options",
    )
    assert options(vx_a) == {"key": "flow", "remote_ip": "192.0.2.20"}

    infos = client.interfaces(bridge)
    assert infos[vx_a].type == "vxlan"
    assert infos[vx_a].external_ids["ovs-fabric-role"] == "tunnel"
    assert eventually(lambda: client.interfaces(bridge)[vx_a].ofport, "tunnel ofport") > 0

    assert client.ensure_tunnels(bridge, {}) is True
    assert ports_of(ovs, bridge) == {foreign}
    assert client.ensure_tunnels(bridge, {}) is False


def test_intents_on_a_missing_bridge_raise_a_conflict(client: OvsdbClient) -> None:
    missing = unique_name("brt")
    with pytest.raises(OvsdbConflict, match=missing):
        client.ensure_tunnels(missing, {"vx0": ("192.0.2.2", None)})
    with pytest.raises(OvsdbConflict, match=missing):
        client.ensure_uplink(missing, "eth-nope")
    with pytest.raises(OvsdbConflict, match=missing):
        client.ensure_vm_port(missing, "tap-nope", port_id="p", mac="02:00:00:00:00:01", vm_id=None)
    assert client.remove_port(missing, "tap-nope") is False
    assert client.interfaces(missing) == {}
    assert client.datapath_id(missing) is None


# ---- uplink and VM ports ------------------------------------------------------------


def test_ensure_uplink_adds_the_system_interface_once(
    ovs: OvsInstance, client: OvsdbClient, bridge: str
) -> None:
    with ovs.veth_pair() as (uplink, _peer):
        assert client.ensure_uplink(bridge, uplink) is True
        assert client.ensure_uplink(bridge, uplink) is False

        assert ports_of(ovs, bridge) == {uplink}
        assert vsctl_json(ovs, "Interface", uplink, "type") == ""
        assert vsctl_json(ovs, "Interface", uplink, "external_ids") == {"ovs-fabric-role": "uplink"}
        ofport = eventually(lambda: client.interfaces(bridge)[uplink].ofport, "uplink ofport")
        assert ofport == int(ovs.get("Interface", uplink, "ofport"))
        assert client.interfaces(bridge)[uplink].error is None

        # Someone strips our mark: it comes back, the port is not re-added.
        ovs.vsctl("remove", "Interface", uplink, "external_ids", "ovs-fabric-role")
        eventually(lambda: client.ensure_uplink(bridge, uplink), "mark repaired")
        assert ports_of(ovs, bridge) == {uplink}
        assert vsctl_json(ovs, "Interface", uplink, "external_ids") == {"ovs-fabric-role": "uplink"}

        assert client.remove_port(bridge, uplink) is True


def test_an_interface_on_another_bridge_is_a_conflict(
    ovs: OvsInstance, client: OvsdbClient, bridge: str
) -> None:
    other = unique_name("brt")
    ovs.vsctl("add-br", other, "--", "set", "Bridge", other, "datapath_type=netdev")
    ovs.vsctl("add-port", other, "taken0", "--", "set", "Interface", "taken0", "type=internal")
    eventually(lambda: "taken0" in client.interfaces(other), "client to see the other bridge")

    with pytest.raises(OvsdbConflict, match=other):
        client.ensure_uplink(bridge, "taken0")
    assert ports_of(ovs, other) == {"taken0"}
    assert ports_of(ovs, bridge) == set()


def test_ensure_vm_port_adds_and_binds_an_owned_port(
    ovs: OvsInstance, client: OvsdbClient, bridge: str
) -> None:
    with ovs.veth_pair() as (tap, _vm_side):
        bind = {"port_id": "port-1", "mac": "02:00:00:00:00:01", "vm_id": "vm-1"}
        assert client.ensure_vm_port(bridge, tap, **bind) is True
        assert client.ensure_vm_port(bridge, tap, **bind) is False

        assert ports_of(ovs, bridge) == {tap}
        assert vsctl_json(ovs, "Interface", tap, "external_ids") == {
            "iface-id": "port-1",
            "attached-mac": "02:00:00:00:00:01",
            "vm-id": "vm-1",
            "iface-status": "active",
            OWNED_KEY: "true",
        }
        ofport = eventually(lambda: client.interfaces(bridge)[tap].ofport, "VM port ofport")
        assert ofport == int(ovs.get("Interface", tap, "ofport"))
        managed = client.managed_vm_ports(bridge)
        assert set(managed) == {tap}
        assert managed[tap].external_ids["iface-id"] == "port-1"

        # Re-bound to another logical port: only the binding changes.
        assert client.ensure_vm_port(bridge, tap, **{**bind, "port_id": "port-2"}) is True
        assert vsctl_json(ovs, "Interface", tap, "external_ids") == {
            "iface-id": "port-2",
            "attached-mac": "02:00:00:00:00:01",
            "vm-id": "vm-1",
            "iface-status": "active",
            OWNED_KEY: "true",
        }
        assert int(ovs.get("Interface", tap, "ofport")) == ofport

        assert client.remove_port(bridge, tap) is True
        assert client.remove_port(bridge, tap) is False
        assert ports_of(ovs, bridge) == set()
        assert client.managed_vm_ports(bridge) == {}


def test_ensure_vm_port_only_stamps_a_port_plugged_by_someone_else(
    ovs: OvsInstance, client: OvsdbClient, bridge: str
) -> None:
    with ovs.veth_pair() as (tap, _vm_side):
        # What libvirt does for <virtualport type='openvswitch'/>.
        ovs.vsctl(
            "add-port", bridge, tap, "--", "set", "Interface", tap,
            "external_ids:iface-id=libvirt-random", "external_ids:attached-mac=02:00:00:00:00:07",
            "external_ids:vm-id=uuid-of-vm", "external_ids:iface-status=active",
        )  # fmt: skip
        eventually(lambda: tap in client.interfaces(bridge), "client to see libvirt's port")

        bind = {"port_id": "port-7", "mac": "02:00:00:00:00:07", "vm_id": None, "owned": False}
        assert client.ensure_vm_port(bridge, tap, **bind) is True
        assert client.ensure_vm_port(bridge, tap, **bind) is False
        assert vsctl_json(ovs, "Interface", tap, "external_ids") == {
            "iface-id": "port-7",
            "attached-mac": "02:00:00:00:00:07",
            "vm-id": "uuid-of-vm",
            "iface-status": "active",
        }

    # Not plugged (yet): a port someone else plugs is never created by us.
    absent = unique_name("tap")
    assert client.ensure_vm_port(bridge, absent, **bind) is False
    assert absent not in ports_of(ovs, bridge)


# ---- failures and reconnection ------------------------------------------------------


def test_unreachable_remotes_raise_ovsdb_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.sock"
    refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(8)  # accepts connections into the backlog, never answers
    try:
        for remote in (
            f"unix:{missing}",
            f"tcp:127.0.0.1:{refused.getsockname()[1]}",
            f"unix:{tmp_path / 'silent.sock'}",
        ):
            ovsdb = OvsdbClient(remote, timeout=1.0)
            try:
                with pytest.raises(OvsdbUnavailable, match=re.escape(remote.split(":")[1])):
                    ovsdb.bridge_exists("br-int")
                assert ovsdb.connected is False
            finally:
                ovsdb.close()
    finally:
        refused.close()
        silent.close()


def test_client_reconnects_after_ovsdb_server_restart(
    ovs: OvsInstance, client: OvsdbClient, intent: BridgeIntent, bridge: str
) -> None:
    assert client.connected is True

    ovs.kill_ovsdb()
    eventually(lambda: not client.connected, "client to notice the server is gone")
    with pytest.raises(OvsdbUnavailable, match=re.escape(str(ovs.db_sock))):
        client.ensure_bridge(intent)

    ovs.start_ovsdb()
    # The database survived on disk, so the bridge is still as intended...
    assert client.ensure_bridge(intent) is False
    assert client.connected is True
    # ...and the new connection sees and repairs drift like the first one.
    ovs.vsctl("set", "Bridge", bridge, "fail_mode=standalone")
    eventually(lambda: client.ensure_bridge(intent), "repair after reconnect")
    assert vsctl_json(ovs, "Bridge", bridge, "fail_mode") == "secure"


def test_close_then_use_connects_again(client: OvsdbClient, bridge: str) -> None:
    client.close()
    assert client.connected is False
    assert client.bridge_exists(bridge) is True
    assert client.connected is True


def test_two_clients_drive_two_ovs_instances_at_once() -> None:
    with running_ovs() as first, running_ovs() as second:
        clients = [OvsdbClient(first.remote), OvsdbClient(second.remote)]
        intents = [
            BridgeIntent(unique_name("brt"), "netdev", "0000000000000001", ()),
            BridgeIntent(unique_name("brt"), "netdev", "0000000000000002", ()),
        ]
        try:
            results: list[bool | None] = [None, None]

            def ensure(index: int) -> None:
                results[index] = clients[index].ensure_bridge(intents[index])

            threads = [threading.Thread(target=ensure, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert results == [True, True]

            for instance, own in zip((first, second), intents, strict=True):
                assert instance.vsctl("list-br").split() == [own.name]
                eventually(
                    lambda i=instance, b=own: (
                        vsctl_json(i, "Bridge", b.name, "datapath_id") == b.datapath_id
                    ),
                    "each switch to take its own datapath id",
                )
            assert clients[0].bridge_exists(intents[1].name) is False
            assert clients[1].bridge_exists(intents[0].name) is False

            # One client going away leaves the other working.
            clients[0].close()
            assert clients[1].ensure_bridge(intents[1]) is False
            assert clients[1].datapath_id(intents[1].name) == eventually(
                lambda: clients[1].datapath_id(intents[1].name), "second dpid"
            )
        finally:
            for ovsdb in clients:
                ovsdb.close()
