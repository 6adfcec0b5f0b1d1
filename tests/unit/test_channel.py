"""Request/reply bookkeeping of one OpenFlow connection."""

import pytest

from controller.openflow.channel import OpenFlowError, SwitchChannel, SwitchDisconnected

pytestmark = pytest.mark.unit


def _channel(sent: list[bytes] | None = None, accept: bool = True) -> SwitchChannel:
    out = sent if sent is not None else []

    def send(data: bytes) -> bool:
        out.append(data)
        return accept

    return SwitchChannel(0xABC, send)


def test_reply_resolves_the_waiting_request_only() -> None:
    ch = _channel()
    a, b = ch.expect(1), ch.expect(2)
    ch.on_reply(2, b"two")
    assert b.result(timeout=0) == b"two"
    assert not a.done()


def test_multipart_parts_are_joined_until_the_last_one() -> None:
    ch = _channel()
    fut = ch.expect(5)
    ch.on_multipart(5, b"ab", more=True)
    assert not fut.done()
    ch.on_multipart(5, b"cd", more=False)
    assert fut.result(timeout=0) == b"abcd"


def test_error_for_a_pending_request_raises_there() -> None:
    ch = _channel()
    fut = ch.expect(9)
    ch.on_error(OpenFlowError(9, 1, 2, b"x"))
    with pytest.raises(OpenFlowError) as info:
        fut.result(timeout=0)
    assert (info.value.type, info.value.code) == (1, 2)


def test_unsolicited_errors_are_kept_for_their_xid_range() -> None:
    ch = _channel()
    ch.on_error(OpenFlowError(10, 4, 0))
    ch.on_error(OpenFlowError(20, 4, 1))
    ch.on_error(OpenFlowError(30, 4, 2))
    taken = ch.take_errors(range(15, 31))
    assert sorted(taken) == [20, 30]
    assert ch.take_errors(range(15, 31)) == {}
    assert list(ch.take_errors(range(0, 11))) == [10]


def test_disconnect_fails_pending_requests_and_later_sends() -> None:
    ch = _channel()
    fut = ch.expect(3)
    ch.on_disconnect()
    with pytest.raises(SwitchDisconnected):
        fut.result(timeout=0)
    with pytest.raises(SwitchDisconnected):
        ch.send(b"hello")
    with pytest.raises(SwitchDisconnected):
        ch.expect(4).result(timeout=0)


def test_send_that_os_ken_refuses_is_a_disconnect() -> None:
    ch = _channel(accept=False)
    with pytest.raises(SwitchDisconnected):
        ch.send(b"x")


def test_xids_are_unique_and_non_zero() -> None:
    ch = _channel()
    xids = [ch.next_xid() for _ in range(1000)]
    assert len(set(xids)) == 1000
    assert 0 not in xids


def test_reserved_xids_are_never_handed_out_again() -> None:
    ch = _channel()
    before = ch.next_xid()
    first = ch.reserve_xids(1000)
    after = ch.next_xid()
    assert before < first and after >= first + 1000
