"""Controller roles on a real Open vSwitch 3.1: the switch itself fences a deposed master.

Two controller connections to one bridge, as two replicas have. A becomes MASTER
with generation 1, then B with generation 2: the switch demotes A to SLAVE and
refuses A's flow-mods (OFPBRC_IS_SLAVE), and A's attempt to take mastership back
with its old generation is refused as stale (OFPRRFC_STALE). That is what makes
the generation counter of `switch_masters` a fencing token: a replica that lost
its PostgreSQL lock but has not noticed yet cannot change the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from controller.core import flows as of
from controller.core import ofmsg
from tests.support.ofclient import OpenFlowConnection, OpenFlowErrorReply, unix_listener
from tests.support.ovs_instance import running_ovs, unique_name

pytestmark = pytest.mark.ovs


@contextlib.contextmanager
def two_controllers() -> Iterator[tuple[OpenFlowConnection, OpenFlowConnection]]:
    with running_ovs() as ovs:
        bridge = ovs.add_bridge(unique_name("role"))
        path_a, path_b = ovs.rundir / "ctl-a.sock", ovs.rundir / "ctl-b.sock"
        with unix_listener(path_a) as listen_a, unix_listener(path_b) as listen_b:
            ovs.vsctl("set-controller", bridge, f"unix:{path_a}", f"unix:{path_b}")
            a = OpenFlowConnection.accept(listen_a)
            b = OpenFlowConnection.accept(listen_b)
            try:
                yield a, b
            finally:
                a.close()
                b.close()


def become(conn: OpenFlowConnection, role: int, generation: int) -> tuple[int, int]:
    xid = conn.xid()
    conn.send(ofmsg.role_request(xid, role, generation))
    return ofmsg.parse_role_reply(conn.wait_for(xid))


def a_flow(priority: int) -> bytes:
    return ofmsg.encode_flow(of.Flow(0, priority, of.match(in_port=1), ())).flow_mod


def test_a_deposed_master_is_fenced_by_the_switch() -> None:
    with two_controllers() as (a, b):
        assert become(a, ofmsg.OFPCR_ROLE_MASTER, 1) == (ofmsg.OFPCR_ROLE_MASTER, 1)
        assert a.send_with_barrier([a_flow(10)]) == {}  # the master may write

        # B is elected with the next generation: the switch demotes A itself.
        assert become(b, ofmsg.OFPCR_ROLE_MASTER, 2) == (ofmsg.OFPCR_ROLE_MASTER, 2)
        errors = a.send_with_barrier([a_flow(11)])
        assert list(errors.values()) == [(ofmsg.OFPET_BAD_REQUEST, ofmsg.OFPBRC_IS_SLAVE)]

        # A, not knowing it lost, cannot take the switch back with its old token.
        with pytest.raises(OpenFlowErrorReply) as stale:
            become(a, ofmsg.OFPCR_ROLE_MASTER, 1)
        assert (stale.value.error_type, stale.value.code) == (
            ofmsg.OFPET_ROLE_REQUEST_FAILED,
            ofmsg.OFPRRFC_STALE,
        )
        assert b.send_with_barrier([a_flow(12)]) == {}  # the new master still writes
        assert a.send_with_barrier([a_flow(13)]) != {}


def test_a_slave_may_not_write_but_may_read() -> None:
    with two_controllers() as (a, b):
        become(a, ofmsg.OFPCR_ROLE_MASTER, 5)
        assert become(b, ofmsg.OFPCR_ROLE_SLAVE, 5) == (ofmsg.OFPCR_ROLE_SLAVE, 5)
        errors = b.send_with_barrier([a_flow(20)])
        assert list(errors.values()) == [(ofmsg.OFPET_BAD_REQUEST, ofmsg.OFPBRC_IS_SLAVE)]
        assert b.multipart(ofmsg.flow_stats_request(0, cookie=0, cookie_mask=0)) is not None
