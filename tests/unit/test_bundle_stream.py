"""The order of what a bulk install puts on the wire, against a scripted switch.

DatapathSync streams new flows into the open bundle while it still encodes the
rest (controller.openflow.bundle). This checks the order of the bytes: groups
confirmed before the flow bundle opens, every flow-mod inside one bundle, adds
sent before the encoder finished once the switch's table is known, and nothing
sent before it is known. The same against a real OVS: tests/ovs/test_reconcile_ovs.py.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable

import pytest

from controller.core import ofmsg
from controller.core.flows import Bucket, Flow, Group, GroupAction, Output, PopVlan, match
from controller.core.pipeline.engine import FlowSequence
from controller.openflow.channel import SwitchChannel
from controller.openflow.probe_schedule import commit_silence
from controller.reconcile import DatapathSync

pytestmark = pytest.mark.unit


class ScriptedSwitch:
    """Answers bundle controls, barriers and reads at once (the flow read only when
    `answer_reads` says so) and records each message: (kind, detail, flows encoded
    by then)."""

    def __init__(self, encoded: Callable[[], int]) -> None:
        self.channel = SwitchChannel(1, self._receive, allow_silence=self._grant)
        self.grants: list[tuple[float, int]] = []  # (seconds, messages logged by then)
        self.encoded = encoded
        self.log: list[tuple[str, int, int]] = []
        self.answer_reads = True
        self.held: list[int] = []
        self.collector_on_group_mod: list[bool] = []  # gc.isenabled() at each group add

    def _grant(self, seconds: float) -> None:
        self.grants.append((seconds, len(self.log)))

    def _receive(self, data: bytes) -> bool:
        offset = 0
        while offset < len(data):
            _v, msg_type, length, xid = ofmsg.parse_header(data[offset : offset + 8])
            self._message(msg_type, xid, data[offset : offset + length])
            offset += length
        return True

    def _message(self, msg_type: int, xid: int, message: bytes) -> None:
        ch, now = self.channel, self.encoded()
        if msg_type == ofmsg.OFPT_MULTIPART_REQUEST:
            (mp_type,) = struct.unpack_from("!H", message, 8)
            self.log.append(("read", mp_type, now))
            if mp_type == ofmsg.OFPMP_FLOW and not self.answer_reads:
                self.held.append(xid)
            else:
                ch.on_multipart(xid, b"", more=False)
        elif msg_type == ofmsg.OFPT_BARRIER_REQUEST:
            ch.on_reply(xid, b"")
        elif msg_type == ofmsg.OFPT_EXPERIMENTER:
            control = ofmsg.parse_bundle_control(message)
            if control is None:  # a bundle add: log the inner message's type
                self.log.append(("add", message[24 + 1], now))  # after the 24-byte head
                if message[24 + 1] == ofmsg.OFPT_GROUP_MOD:
                    self.collector_on_group_mod.append(gc.isenabled())
            else:
                self.log.append(("control", control[1], now))
                ch.on_reply(xid, b"")
        else:
            self.log.append(("bare", msg_type, now))

    def release_reads(self) -> None:
        for xid in self.held:
            self.channel.on_multipart(xid, b"", more=False)
        self.held.clear()


class Encoder:
    """Counts the flows the reconciler has encoded; `at[n]` runs once the n-th is."""

    def __init__(self) -> None:
        self.count = 0
        self.at: dict[int, Callable[[], None]] = {}


@pytest.fixture
def encoder(monkeypatch: pytest.MonkeyPatch) -> Encoder:
    counter = Encoder()
    encode = ofmsg.encode_flow_uncached

    def counting(flow: Flow) -> ofmsg.EncodedFlow:
        counter.count += 1
        if counter.count in counter.at:
            counter.at.pop(counter.count)()
        return encode(flow)

    monkeypatch.setattr(ofmsg, "encode_flow_uncached", counting)
    return counter


def _flows(count: int, group: int | None = None) -> tuple[Flow, ...]:
    actions = (PopVlan(), Output(1)) if group is None else (GroupAction(group),)
    return tuple(
        Flow(3, 100, match(vlan_vid=0x1000 | (1 + i % 4000), eth_dst=0x02 << 40 | i), actions)
        for i in range(count)
    )


def test_adds_leave_while_encoding_and_groups_go_first(encoder: Encoder) -> None:
    switch = ScriptedSwitch(lambda: encoder.count)
    sync = DatapathSync(switch.channel)
    sync.read_actual()  # the table is known (empty) before apply starts
    group = Group(0x10, "all", (Bucket((Output(2),)),))
    flows = _flows(5000, group=0x10)
    result = sync.apply(flows, [group])
    assert result.flows_added == 5000 and result.groups_added == 1 and not result.rejected

    kinds = [(kind, detail) for kind, detail, _ in switch.log if kind != "read"]
    # The group's own bundle is committed before the flow bundle opens.
    assert kinds[:3] == [
        ("control", ofmsg.ONF_BCT_OPEN_REQUEST),
        ("add", ofmsg.OFPT_GROUP_MOD),
        ("control", ofmsg.ONF_BCT_COMMIT_REQUEST),
    ]
    assert kinds[3] == ("control", ofmsg.ONF_BCT_OPEN_REQUEST)
    assert kinds[4:-1] == [("add", ofmsg.OFPT_FLOW_MOD)] * 5000  # all inside one bundle
    assert kinds[-1] == ("control", ofmsg.ONF_BCT_COMMIT_REQUEST)
    first_add = next(n for kind, detail, n in switch.log if detail == ofmsg.OFPT_FLOW_MOD)
    assert first_add < 5000  # on the wire before the last flow was encoded
    # The group bundle is waited for with the collector running.
    assert switch.collector_on_group_mod == [True]
    assert not sync.apply(flows, [group]).changed


def test_nothing_is_sent_before_the_table_is_read(encoder: Encoder) -> None:
    switch = ScriptedSwitch(lambda: encoder.count)
    sync = DatapathSync(switch.channel)
    switch.answer_reads = False
    sync._request_read()  # as resync() does (the monitor aside): answered later
    flows = _flows(3000)
    # The switch answers the read only once the last flow is encoded: they all wait.
    encoder.at[len(flows)] = switch.release_reads
    result = sync.apply(flows, [])
    assert result.flows_added == 3000
    adds = [n for kind, _detail, n in switch.log if kind == "add"]
    assert len(adds) == 3000 and min(adds) == 3000


def test_the_collector_waits_while_flows_are_encoded(encoder: Encoder) -> None:
    switch = ScriptedSwitch(lambda: encoder.count)
    sync = DatapathSync(switch.channel)
    sync.read_actual()
    seen: list[bool] = []
    encoder.at[100] = lambda: seen.append(gc.isenabled())
    assert gc.isenabled()
    sync.apply(_flows(200), [])
    assert seen == [False] and gc.isenabled()


def test_a_big_bundle_carries_echo_requests_the_switch_answers_on_the_way(
    encoder: Encoder,
) -> None:
    switch = ScriptedSwitch(lambda: encoder.count)
    sync = DatapathSync(switch.channel)
    sync.read_actual()
    assert sync.apply(_flows(12_000), []).flows_added == 12_000  # ~1.5 MB of adds
    kinds = [(kind, detail) for kind, detail, _ in switch.log if kind != "read"]
    echoes = [i for i, k in enumerate(kinds) if k == ("bare", ofmsg.OFPT_ECHO_REQUEST)]
    assert echoes and all(0 < i < len(kinds) - 1 for i in echoes)  # inside the stream
    rest = [k for k in kinds if k != ("bare", ofmsg.OFPT_ECHO_REQUEST)]
    assert rest == [
        ("control", ofmsg.ONF_BCT_OPEN_REQUEST),
        *[("add", ofmsg.OFPT_FLOW_MOD)] * 12_000,
        ("control", ofmsg.ONF_BCT_COMMIT_REQUEST),
    ]


def test_a_bundle_commit_grants_the_switch_silence_for_its_size(encoder: Encoder) -> None:
    switch = ScriptedSwitch(lambda: encoder.count)
    sync = DatapathSync(switch.channel)
    sync.read_actual()
    assert sync.apply(_flows(12_000), []).flows_added == 12_000
    # Granted before the commit leaves, so the keepalive cannot judge the silence
    # of the switch's commit before it knows of it.
    ((seconds, logged),) = switch.grants
    assert seconds == commit_silence(12_000) > 0
    commits = [
        i
        for i, (kind, detail, _) in enumerate(switch.log)
        if (kind, detail) == ("control", ofmsg.ONF_BCT_COMMIT_REQUEST)
    ]
    assert len(commits) == 1 and commits[0] >= logged


def test_a_flow_two_chunks_hold_stays_until_neither_does(encoder: Encoder) -> None:
    switch = ScriptedSwitch(lambda: encoder.count)
    sync = DatapathSync(switch.channel)
    sync.read_actual()
    a, b, c = _flows(30)[:10], _flows(30)[10:20], _flows(30)[20:]
    shared = a[0]
    first = FlowSequence([a, (shared, *b), c])
    result = sync.apply(first, [])
    assert result.flows_added == 30  # the shared flow once
    # The first chunk goes: its flows but the shared one are deleted.
    result = sync.apply(FlowSequence([(shared, *b), c]), [])
    assert (result.flows_added, result.flows_deleted) == (0, 9)
    # Now nothing holds it.
    result = sync.apply(FlowSequence([b, c]), [])
    assert (result.flows_added, result.flows_deleted) == (0, 1)


def test_a_flow_that_cannot_be_encoded_mid_stream_discards_the_bundle(encoder: Encoder) -> None:
    switch = ScriptedSwitch(lambda: encoder.count)
    sync = DatapathSync(switch.channel)
    sync.read_actual()
    bad = Flow(3, 100, match(eth_dst=1), (Output(1 << 40),))  # port beyond 32 bits
    flows = (*_flows(3000), bad)
    with pytest.raises(ValueError, match="cannot encode"):
        sync.apply(flows, [])
    controls = [detail for kind, detail, _ in switch.log if kind == "control"]
    assert controls == [ofmsg.ONF_BCT_OPEN_REQUEST, ofmsg.ONF_BCT_DISCARD_REQUEST]
    assert gc.isenabled()
    # The next pass diffs everything again and installs the good flows.
    assert sync.apply(flows[:-1], []).flows_added == 3000
