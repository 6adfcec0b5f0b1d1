"""The keepalive against real ovs-vswitchd and os-ken: an idle switch is probed and
kept, a connection the switch closes is torn down, a frozen switch is given up
(later when its channel allowed it a long silence, as a big bundle's commit does).

The controller runs in a child process (tests/support/openflow_child.py): os-ken
runs once per process and test_reconcile_ovs.py may hold this worker's. Each
switch reaches it through the service's unix-socket relay, as the service runs it.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from controller.openflow.relay import UnixToTcpRelay
from tests.support.eventually import eventually
from tests.support.openflow_child import ChildController, child_controller
from tests.support.ovs_instance import OvsInstance, running_ovs

pytestmark = pytest.mark.ovs


@pytest.fixture(scope="module")
def controller() -> Iterator[ChildController]:
    with child_controller() as started:
        yield started


@pytest.fixture(scope="module")
def ovs() -> Iterator[OvsInstance]:
    with running_ovs() as instance:
        yield instance


@contextmanager
def connected(ovs: OvsInstance, controller: ChildController, bridge: str) -> Iterator[int]:
    """A bridge of `ovs` connected to the controller; yields its datapath id."""
    dpid = random.getrandbits(47) | 1
    ovs.add_bridge(bridge, f"other_config:datapath-id={dpid:016x}")
    relay = UnixToTcpRelay(ovs.rundir / f"{bridge}.sock", ("127.0.0.1", controller.port))
    relay.start()
    try:
        mark = len(controller.seen)
        ovs.vsctl("set-controller", bridge, f"unix:{ovs.rundir / f'{bridge}.sock'}")
        controller.wait_for(("connected", dpid), after=mark)
        yield dpid
    finally:
        relay.close()
        ovs.vsctl("--if-exists", "del-br", bridge)


def test_an_idle_switch_is_probed_and_kept(ovs: OvsInstance, controller: ChildController) -> None:
    with connected(ovs, controller, "br-idle") as dpid:
        mark = len(controller.seen)
        before = controller.counts().probes_sent
        # Nothing else talks to it: each probe is one silence of probe_after, answered.
        eventually(
            lambda: controller.counts().probes_sent >= before + 3,
            what="three probes of the idle switch",
            timeout=30,
        )
        assert ("disconnected", dpid) not in controller.seen[mark:]
        assert controller.counts().declared_dead == 0


def test_a_connection_the_switch_closes_is_torn_down(
    ovs: OvsInstance, controller: ChildController
) -> None:
    with connected(ovs, controller, "br-close") as dpid:
        mark = len(controller.seen)
        ovs.vsctl("del-controller", "br-close")
        # os-ken's sender would wait on its queue forever: no DEAD event without the
        # keepalive releasing it.
        controller.wait_for(("disconnected", dpid), after=mark)


def test_a_frozen_switch_is_given_up_and_taken_back(controller: ChildController) -> None:
    with running_ovs() as frozen, connected(frozen, controller, "br-frozen") as dpid:
        vswitchd = frozen.daemons.pid("vswitchd")
        assert vswitchd is not None
        mark, before = len(controller.seen), controller.counts().declared_dead
        os.kill(vswitchd, signal.SIGSTOP)
        try:
            gone = controller.wait_for(("disconnected", dpid), after=mark)
            assert controller.counts().declared_dead == before + 1
        finally:
            os.kill(vswitchd, signal.SIGCONT)
        controller.wait_for(("connected", dpid), after=gone, timeout=30)


def test_a_switch_granted_silence_is_given_up_only_once_the_grant_is_over(
    controller: ChildController,
) -> None:
    with running_ovs() as busy, connected(busy, controller, "br-busy") as dpid:
        vswitchd = busy.daemons.pid("vswitchd")
        assert vswitchd is not None
        mark, before = len(controller.seen), controller.counts().declared_dead
        controller.allow_silence(dpid, 4.0)  # as the commit of ~100k bundled flows
        os.kill(vswitchd, signal.SIGSTOP)
        try:
            # Past the usual verdict (<= 1.8 s after its last message) but within the
            # grant: still connected.
            time.sleep(3.0)
            assert controller.counts().declared_dead == before
            # The grant is a bound, not a pardon.
            gone = controller.wait_for(("disconnected", dpid), after=mark)
            assert controller.counts().declared_dead == before + 1
        finally:
            os.kill(vswitchd, signal.SIGCONT)
        controller.wait_for(("connected", dpid), after=gone, timeout=30)
