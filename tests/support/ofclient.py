"""A raw OpenFlow 1.3 client for tests and benchmarks.

It puts `controller.ofmsg` bytes on a real switch with no os-ken in between:
accept the switch's connection, do the HELLO/FEATURES handshake by hand, then
send bytes and read whole messages (echo requests are answered on the way).
Pair it with `ovs_instance.running_ovs()` for a throwaway switch
(`controller_connection` connects one of its bridges to us).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from controller.core import ofmsg

if TYPE_CHECKING:
    from tests.support.ovs_instance import OvsInstance

_HEADER = struct.Struct("!BBHI")
_MULTIPART_REPLY_HEAD = struct.Struct("!HH4x")
_SEND_SLICE = 256 * 1024
# OFPHET_VERSIONBITMAP with only OpenFlow 1.3 (wire version 4) set.
_HELLO = struct.pack("!BBHIHHI", ofmsg.OFP_VERSION, ofmsg.OFPT_HELLO, 16, 0, 1, 8, 1 << 4)


class OpenFlowErrorReply(Exception):
    def __init__(self, xid: int, error_type: int, code: int) -> None:
        super().__init__(f"OpenFlow error type={error_type} code={code} for xid {xid}")
        self.xid = xid
        self.error_type = error_type
        self.code = code


@dataclass
class BundleOutcome:
    committed: bool
    # xid -> (type, code) of every error the switch sent for the bundle's messages.
    errors: dict[int, tuple[int, int]] = field(default_factory=dict)


class OpenFlowConnection:
    """One switch connection, synchronous: send bytes, read whole messages."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._next_xid = 1
        self.datapath_id = 0

    @classmethod
    def accept(cls, listener: socket.socket, timeout: float = 10.0) -> OpenFlowConnection:
        listener.settimeout(timeout)
        sock, _ = listener.accept()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        connection = cls(sock)
        try:
            connection._handshake(timeout)
        except BaseException:
            sock.close()
            raise
        return connection

    def _handshake(self, timeout: float) -> None:
        self.send(_HELLO)
        hello = self.receive(timeout)
        if hello[1] != ofmsg.OFPT_HELLO or hello[0] < ofmsg.OFP_VERSION:
            raise ConnectionError(f"expected an OpenFlow 1.3 HELLO, got {hello[:8].hex()}")
        xid = self.xid()
        self.send(_HEADER.pack(ofmsg.OFP_VERSION, ofmsg.OFPT_FEATURES_REQUEST, 8, xid))
        reply = self.wait_for(xid, timeout)
        if reply[1] != ofmsg.OFPT_FEATURES_REPLY:
            raise ConnectionError(f"expected FEATURES_REPLY, got type {reply[1]}")
        (self.datapath_id,) = struct.unpack_from("!Q", reply, 8)

    def close(self) -> None:
        self._sock.close()

    def xid(self) -> int:
        xid = self._next_xid
        self._next_xid += 1
        return xid

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def receive(self, timeout: float = 10.0) -> bytes:
        """The next message from the switch; echo requests are answered on the way."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._take_message()
            if message is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no OpenFlow message from the switch")
                self._sock.settimeout(remaining)
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("the switch closed the OpenFlow connection")
                self._buffer += chunk
                continue
            if message[1] == ofmsg.OFPT_ECHO_REQUEST:
                self.send(bytes([message[0], ofmsg.OFPT_ECHO_REPLY]) + message[2:])
                continue
            return message

    def _take_message(self) -> bytes | None:
        if len(self._buffer) < 8:
            return None
        length = int.from_bytes(self._buffer[2:4], "big")
        if length < 8:
            raise ConnectionError(f"malformed OpenFlow header {self._buffer[:8].hex()}")
        if len(self._buffer) < length:
            return None
        message = bytes(self._buffer[:length])
        del self._buffer[:length]
        return message

    def wait_for(self, xid: int, timeout: float = 10.0) -> bytes:
        """The next message with `xid`; an error reply raises. Others are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(deadline - time.monotonic(), 0.001))
            if ofmsg.parse_header(message)[3] != xid:
                continue
            if message[1] == ofmsg.OFPT_ERROR:
                error_type, code, _ = ofmsg.parse_error(message)
                raise OpenFlowErrorReply(xid, error_type, code)
            return message

    def barrier(self, timeout: float = 10.0) -> None:
        xid = self.xid()
        self.send(ofmsg.barrier_request(xid))
        self.wait_for(xid, timeout)

    def send_with_barrier(
        self, messages: list[bytes], timeout: float = 10.0
    ) -> dict[int, tuple[int, int]]:
        """Send messages (xids replaced) then a barrier; the errors they caused by xid.
        The switch answers a barrier only after everything sent before it."""
        payload = bytearray()
        for message in messages:
            payload += ofmsg.with_xid(message, self.xid())
        barrier_xid = self.xid()
        payload += ofmsg.barrier_request(barrier_xid)
        self.send(bytes(payload))
        errors, _reply = self._errors_until(barrier_xid, timeout)
        return errors

    def multipart(self, request: bytes, timeout: float = 10.0) -> bytes:
        """Send a multipart request (its xid is replaced) and join the reply bodies."""
        xid = self.xid()
        self.send(ofmsg.with_xid(request, xid))
        body = bytearray()
        while True:
            reply = self.wait_for(xid, timeout)
            if reply[1] != ofmsg.OFPT_MULTIPART_REPLY:
                raise ConnectionError(f"expected MULTIPART_REPLY, got type {reply[1]}")
            _mp_type, flags = _MULTIPART_REPLY_HEAD.unpack_from(reply, 8)
            body += reply[16:]
            if not flags & ofmsg.OFPMPF_REPLY_MORE:
                return bytes(body)

    def bundle(
        self, messages: Iterable[bytes], bundle_id: int = 1, timeout: float = 60.0
    ) -> tuple[BundleOutcome, list[int]]:
        """Open, add every message, commit; wait for the commit's answer.

        Adds go out in slices as `messages` yields them, so the switch works on the
        first ones while later ones are still being encoded. Returns the outcome and
        the xid of each add (in order), so a test can tell which message an error names.
        """
        open_xid = self.xid()
        add_xids: list[int] = []
        payload = bytearray(ofmsg.bundle_open(bundle_id, open_xid))
        for message in messages:
            xid = self.xid()
            add_xids.append(xid)
            payload += ofmsg.bundle_add(bundle_id, xid, message)
            if len(payload) >= _SEND_SLICE:
                self.send(bytes(payload))
                payload.clear()
        commit_xid = self.xid()
        payload += ofmsg.bundle_commit(bundle_id, commit_xid)
        self.send(bytes(payload))
        return self.await_commit(commit_xid, timeout), add_xids

    def await_commit(self, commit_xid: int, timeout: float = 60.0) -> BundleOutcome:
        """Collect errors until the commit is answered (a COMMIT_REPLY or an error)."""
        errors, answer = self._errors_until(commit_xid, timeout)
        control = None if answer[1] == ofmsg.OFPT_ERROR else ofmsg.parse_bundle_control(answer)
        committed = control is not None and control[1] == ofmsg.ONF_BCT_COMMIT_REPLY
        return BundleOutcome(committed=committed, errors=errors)

    def _errors_until(self, xid: int, timeout: float) -> tuple[dict[int, tuple[int, int]], bytes]:
        """Read until the answer to `xid` (its reply, or an error for it) arrives.

        Returns the (type, code) of every error seen on the way, by xid, and that answer.
        """
        errors: dict[int, tuple[int, int]] = {}
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(deadline - time.monotonic(), 0.001))
            message_xid = ofmsg.parse_header(message)[3]
            if message[1] == ofmsg.OFPT_ERROR:
                error_type, code, _ = ofmsg.parse_error(message)
                errors[message_xid] = (error_type, code)
            if message_xid == xid:
                return errors, message


@contextlib.contextmanager
def unix_listener(path: Path) -> Iterator[socket.socket]:
    """A listening unix socket at `path` for a switch to connect to; removed afterwards.

    OVS connects to a `unix:` controller only inside its own run directory, and a
    unix socket reaches a vswitchd in another network namespace without a relay.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1)
        yield listener
    finally:
        listener.close()
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def controller_connection(
    ovs: OvsInstance, bridge: str, socket_name: str = "controller.sock"
) -> Iterator[OpenFlowConnection]:
    """`bridge` of `ovs` connected to us: its OpenFlow connection, closed afterwards."""
    path = ovs.rundir / socket_name
    with unix_listener(path) as listener:
        ovs.vsctl("set-controller", bridge, f"unix:{path}")
        conn = OpenFlowConnection.accept(listener)
        try:
            yield conn
        finally:
            conn.close()
