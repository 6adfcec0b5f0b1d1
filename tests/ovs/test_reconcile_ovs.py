"""The reconciler against a real ovs-vswitchd through real os-ken.

os-ken runs in this test process (once per session: it keeps process-wide
state); each test gets a fresh OVS in its own namespace that reaches os-ken
through the service's unix-socket relay in the OVS run directory.
"""

from __future__ import annotations

import random
import subprocess
import threading
from collections.abc import Iterator

import pytest

from api.launcher import free_tcp_port
from controller.core import ofmsg
from controller.core.flows import (
    Bucket,
    Ct,
    Flow,
    Group,
    GroupAction,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    match,
)
from controller.openflow.app import start_openflow_controller
from controller.openflow.channel import SwitchChannel
from controller.openflow.relay import UnixToTcpRelay
from controller.reconcile import DatapathSync
from lab.netns import run
from tests.support.eventually import eventually
from tests.support.ovs_instance import OvsInstance, running_ovs
from tests.support.switch_sink import SwitchChannels

pytestmark = pytest.mark.ovs


@pytest.fixture(scope="session")
def openflow() -> Iterator[tuple[SwitchChannels, int]]:
    sink = SwitchChannels()
    port = free_tcp_port()
    stop = start_openflow_controller(sink, host="127.0.0.1", port=port)
    yield sink, port
    stop()


@pytest.fixture
def switch(openflow: tuple[SwitchChannels, int]) -> Iterator[tuple[OvsInstance, DatapathSync]]:
    sink, port = openflow
    with running_ovs() as ovs:
        dpid = random.getrandbits(47) | 1
        ovs.add_bridge("br-int", f"other_config:datapath-id={dpid:016x}")
        relay = UnixToTcpRelay(ovs.rundir / "ofp.sock", ("127.0.0.1", port))
        relay.start()
        try:
            ovs.vsctl("set-controller", "br-int", f"unix:{ovs.rundir / 'ofp.sock'}")
            sync = DatapathSync(sink.wait(dpid), timeout=20)
            sync.resync()
            assert sync.monitoring  # OVS >= 3.0 has the flow monitor on OpenFlow 1.3
            yield ovs, sync
        finally:
            relay.close()


def _flows(ovs: OvsInstance) -> list[str]:
    lines = ovs.ofctl("dump-flows", "br-int").splitlines()
    return [line.strip() for line in lines if "cookie=" in line]


def _vlan_flows(count: int, out_port: int = 1) -> list[Flow]:
    return [
        Flow(
            table=3,
            priority=100,
            match=match(vlan_vid=0x1000 | (1 + i % 4000), eth_dst=0x020000000000 + i),
            actions=(PopVlan(), Output(out_port)),
        )
        for i in range(count)
    ]


def test_apply_installs_exactly_the_desired_flows_and_is_idempotent(
    switch: tuple[OvsInstance, DatapathSync],
) -> None:
    ovs, sync = switch
    flows = _vlan_flows(50)
    result = sync.apply(flows, [])
    assert result.flows_added == 50 and not result.rejected
    installed = _flows(ovs)
    assert len(installed) == 50
    assert all("cookie=0xfab" in line for line in installed), installed[:3]

    assert not sync.apply(flows, []).changed
    sync.read_actual()  # what the switch really holds equals what we think it holds
    assert not sync.apply(flows, []).changed


def test_changes_replace_and_remove_only_what_differs(
    switch: tuple[OvsInstance, DatapathSync],
) -> None:
    ovs, sync = switch
    flows = _vlan_flows(20)
    sync.apply(flows, [])
    changed = [*flows[:10], *(_vlan_flows(20, out_port=2)[10:15])]
    result = sync.apply(changed, [])
    # 5 flows got new actions (replaced in place), 10 are gone.
    assert (result.flows_added, result.flows_deleted) == (5, 10)
    installed = _flows(ovs)
    assert len(installed) == 15
    assert sum("output:2" in line for line in installed) == 5


def test_groups_are_added_before_and_deleted_after_the_flows_using_them(
    switch: tuple[OvsInstance, DatapathSync],
) -> None:
    ovs, sync = switch
    g1 = Group(group_id=0x1001, type="all", buckets=(Bucket((Output(1),)), Bucket((Output(2),))))
    g2 = Group(group_id=0x1002, type="all", buckets=(Bucket((Output(3),)),))
    flood = Flow(table=0, priority=10, match=match(eth_type=0x0806), actions=(GroupAction(0x1001),))
    result = sync.apply([flood], [g1])
    assert (result.groups_added, result.flows_added) == (1, 1) and not result.rejected
    swapped = Flow(
        table=0, priority=10, match=match(eth_type=0x0806), actions=(GroupAction(0x1002),)
    )
    result = sync.apply([swapped], [g2])
    assert (result.groups_added, result.groups_deleted) == (1, 1)
    groups = ovs.ofctl("dump-groups", "br-int")
    assert "group_id=4098" in groups and "group_id=4097" not in groups
    assert "group:4098" in "".join(_flows(ovs))


def test_a_rejected_flow_is_reported_and_the_rest_still_lands(
    switch: tuple[OvsInstance, DatapathSync],
) -> None:
    ovs, sync = switch
    good = _vlan_flows(3000)
    # OVS refuses a flow that outputs to a group which does not exist. In the middle:
    # the bundle is sent in slices while the rest is encoded (rejected mid-stream).
    bad = Flow(table=0, priority=5, match=match(eth_type=0x0800), actions=(GroupAction(0x7777),))
    desired = [*good[:1500], bad, *good[1500:]]
    result = sync.apply(desired, [])
    assert list(result.rejected) == [bad]
    assert result.flows_added == 3000
    assert len(_flows(ovs)) == 3000
    # The rejection is remembered: the same desired state does not resend it.
    assert not sync.apply(desired, []).changed


def test_drift_is_found_by_reading_the_switch(switch: tuple[OvsInstance, DatapathSync]) -> None:
    ovs, sync = switch
    flows = _vlan_flows(30)
    sync.apply(flows, [])
    ovs.ofctl("del-flows", "br-int", "table=3,dl_vlan=5")
    ovs.ofctl("add-flow", "br-int", "table=0,priority=1,actions=drop")  # foreign, cookie 0
    assert len(_flows(ovs)) == 30  # 29 ours + 1 foreign
    sync.read_actual()
    result = sync.apply(flows, [])
    assert result.flows_added == 1
    installed = _flows(ovs)
    assert len(installed) == 30 and all("cookie=0xfab" in line for line in installed)


def test_set_field_and_many_flows_in_one_bundle(switch: tuple[OvsInstance, DatapathSync]) -> None:
    ovs, sync = switch
    flows = [
        Flow(
            table=1,
            priority=200,
            match=match(in_port=1 + i % 50, eth_src=0x020000100000 + i),
            actions=(SetField("tunnel_id", 5000 + i),),
            goto_table=2,
        )
        for i in range(5000)
    ]
    result = sync.apply(flows, [])
    assert result.flows_added == 5000 and not result.rejected
    assert len(_flows(ovs)) == 5000


def _barrier(channel: SwitchChannel) -> None:
    """Returns once the switch has sent everything it queued for us before (flow
    monitor notes about changes ovs-ofctl already made included)."""
    xid = channel.next_xid()
    reply = channel.expect(xid)
    channel.send(ofmsg.barrier_request(xid))
    reply.result(timeout=20)


def _change_by_hand(ovs: OvsInstance) -> None:
    """Another OpenFlow connection deletes, adds and edits flows in place."""
    ovs.ofctl(
        "del-flows", "br-int", "--strict", "table=3,priority=100,dl_vlan=5,dl_dst=02:00:00:00:00:04"
    )
    ovs.ofctl("add-flow", "br-int", "table=0,priority=1,actions=drop")  # foreign, cookie 0
    # A flow under our cookie prefix that nothing desires.
    ovs.ofctl("add-flow", "br-int", "cookie=0x0fab000000000001,table=7,priority=1,actions=drop")
    # Same match, same cookie, other actions: counts and cookies cannot see this one.
    ovs.ofctl(
        "mod-flows", "br-int", "--strict",
        "table=3,priority=100,dl_vlan=9,dl_dst=02:00:00:00:00:08,actions=drop",
    )  # fmt: skip


def test_flows_changed_by_hand_are_repaired_by_the_next_audit_pass(
    switch: tuple[OvsInstance, DatapathSync],
) -> None:
    ovs, sync = switch
    flows = _vlan_flows(50)
    sync.apply(flows, [])
    wanted = sorted(line.split(" actions=")[0].split("priority=")[1] + line.split(" actions=")[1]
                    for line in _flows(ovs))  # fmt: skip
    woken = threading.Event()
    sync.channel.set_change_listener(woken.set)
    _change_by_hand(ovs)
    assert woken.wait(20), "the flow monitor reported nothing"
    _barrier(sync.channel)
    audit = sync.audit()  # one pass: the audit, then apply
    assert audit.changes_reported == 4 and audit.read_back is None
    result = sync.apply(flows, [])
    assert result.flows_added == 2  # the deleted and the edited one
    installed = _flows(ovs)
    assert all("cookie=0xfab" in line for line in installed), installed
    got = sorted(line.split(" actions=")[0].split("priority=")[1] + line.split(" actions=")[1]
                 for line in installed)  # fmt: skip
    assert got == wanted
    assert not sync.apply(flows, []).changed


def test_the_audit_counts_catch_what_the_monitor_did_not_report(
    switch: tuple[OvsInstance, DatapathSync],
) -> None:
    ovs, sync = switch
    flows = _vlan_flows(40)
    sync.apply(flows, [])
    quiet = sync.audit()
    assert (quiet.flow_count, quiet.read_back) == (40, None)
    ovs.ofctl("del-flows", "br-int", "table=3,dl_vlan=3")
    ovs.ofctl("del-flows", "br-int", "table=3,dl_vlan=4")
    ovs.ofctl("add-flow", "br-int", "table=0,priority=1,actions=drop")
    _barrier(sync.channel)
    sync.channel.take_flow_updates()  # as if the notes were lost
    audit = sync.audit()
    assert audit.flow_count == 39 and audit.read_back is not None
    result = sync.apply(flows, [])
    assert (result.flows_added, result.flows_purged) == (2, 1)
    installed = _flows(ovs)
    assert len(installed) == 40 and all("cookie=0xfab" in line for line in installed)


def test_resync_after_a_reconnect_sends_no_flow_mod(
    openflow: tuple[SwitchChannels, int], switch: tuple[OvsInstance, DatapathSync]
) -> None:
    sink, _port = openflow
    ovs, sync = switch
    flows = tuple(_vlan_flows(2000))
    sync.apply(flows, [])
    # Like a controller restart: the switch connects anew, to a fresh reconciler.
    run(["ovs-appctl", "-t", str(ovs.daemons.ctl("vswitchd")), "bridge/reconnect", "br-int"])
    channel = sink.wait(sync.channel.datapath_id, not_=sync.channel)
    # A witness connection of our own: OVS reports to it every flow anyone changes.
    watcher = subprocess.Popen(
        ["ovs-ofctl", "-O", "OpenFlow13", f"--unixctl={ovs.rundir / 'witness.ctl'}",
         "monitor", ovs.daemons.mgmt_target("br-int"), "watch:!initial"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,  # updates go to stderr
    )  # fmt: skip
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(watcher.stdout or ()), daemon=True)
    reader.start()
    try:
        eventually(lambda: any("reply" in line for line in seen), "the witness monitors")
        fresh = DatapathSync(channel, timeout=20)
        fresh.resync()
        assert not fresh.apply(flows, []).changed
        ovs.ofctl("add-flow", "br-int", "table=200,priority=1,actions=drop")  # end marker
        eventually(lambda: any("table=200" in line for line in seen), "the marker")
    finally:
        watcher.terminate()
        watcher.wait(10)
    events = [line for line in seen if "event=" in line]
    assert len(events) == 1 and "table=200" in events[0], events


def _groups(ovs: OvsInstance) -> list[str]:
    lines = ovs.ofctl("dump-groups", "br-int").splitlines()
    return sorted(line.strip() for line in lines if "group_id=" in line)


def test_a_group_edited_in_place_is_set_back_by_the_next_audit_pass(
    switch: tuple[OvsInstance, DatapathSync],
) -> None:
    ovs, sync = switch
    # Every kind of action our groups carry: flood (output, VLAN push, tunnel id) and
    # load balancer (conntrack with destination NAT, weighted select).
    flood = Group(0x2001, "all", (
        Bucket((Output(1),)),
        Bucket((PushVlan(), SetField("vlan_vid", 0x1000 | 7), Output(2))),
        Bucket((SetField("tunnel_id", 5001), Output(3))),
    ))  # fmt: skip
    backends = [(0x0A000005, 80, 3), (0x0A000006, 8080, 1)]
    lb = Group(0x2002, "select", tuple(
        Bucket((Ct(zone=3, commit=True, table=40, nat=Nat(dst_ip=ip, dst_port=port)),), weight=w)
        for ip, port, w in backends
    ))  # fmt: skip
    groups = [flood, lb]
    flows = [
        Flow(table=0, priority=10, match=match(eth_type=0x0806), actions=(GroupAction(0x2001),)),
        Flow(table=0, priority=20, match=match(eth_type=0x0800), actions=(GroupAction(0x2002),)),
    ]
    assert sync.apply(flows, groups).groups_added == 2
    wanted = _groups(ovs)
    wanted_flows = ovs.ofctl("dump-flows", "br-int", "--no-stats")
    # The switch writes our groups back as we sent them: an audit finds nothing to repair.
    sync.audit()
    assert not sync.apply(flows, groups).changed

    ovs.ofctl("mod-group", "br-int", "group_id=8194,type=select,bucket=weight:1,actions=output:4")
    ovs.ofctl("mod-group", "br-int", "group_id=8193,type=all,bucket=actions=output:1")
    assert _groups(ovs) != wanted
    sync.audit()
    result = sync.apply(flows, groups)

    assert result.groups_repaired == 2 and not result.rejected
    assert (result.groups_added, result.groups_deleted, result.flows_added) == (0, 0, 0)
    assert _groups(ovs) == wanted
    # Modified in place: the flows using them stayed (OVS deletes them with a group).
    assert ovs.ofctl("dump-flows", "br-int", "--no-stats") == wanted_flows
    assert not sync.apply(flows, groups).changed
    sync.audit()
    assert not sync.apply(flows, groups).changed
