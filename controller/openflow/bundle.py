"""One atomic ONF bundle (EXT-230) written to the switch while it is being built.

A bulk install is two CPU-bound halves on a 2-core machine: we encode flows,
ovs-vswitchd (userspace) decodes each bundled flow-mod as it arrives and applies
them all at the commit. Sent only once everything was encoded, the switch waits
for our encoder and then we wait for the switch (measured, 100k flows: 0.74 s
encoding with the switch idle, then 0.48 s of the switch's work after our last
write). `BundleWriter` opens the bundle at the first message and hands the
socket a slice whenever `_SEND_SLICE` bytes are buffered, so the switch parses
slice N on its core while we encode slice N+1 (os-ken's sender thread writes
with the GIL released). Nothing is applied before the commit: the bundle stays
atomic and ordered.

A switch taking a big bundle says nothing until the commit, and a probe queued
behind megabytes of adds (in our queue, the kernel's buffers and the relay's)
is answered only once the switch has parsed them all: on a loaded 2-core machine
(load average ~7) the keepalive declared a healthy switch dead in the middle of
a 100k-flow install (1 of 2 runs of 4 installs, bench.flow_install with the
service's schedule). So an echo request follows every `_ECHO_EVERY` bytes of
adds: the switch answers each as it reaches it (the keepalive counts any message
as proof of life and drops echo replies on arrival), as ovs-ofctl's own bundles
carry a barrier before their commit. Messages outside a bundle do not touch it.
The commit itself is one silent stretch of the switch's main loop (0.3-0.6 s for
100k flows): the channel grants it `commit_silence(count)` before it is sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from controller.core import ofmsg
from controller.openflow.channel import OpenFlowError, SwitchChannel, SwitchDisconnected
from controller.openflow.keepalive import ECHO_REQUEST
from controller.openflow.probe_schedule import commit_silence

# The switch starts on a slice as soon as it arrives: small enough that it starts
# early, large enough that the send queue (os-ken: 16 entries) is not a per-flow cost.
_SEND_SLICE = 128 << 10
# Messages wrapped at a time: ~128 KiB of flow-mods.
_PIECE = 1024
# ~8k flow-mods; the switch parses them in 50-100 ms (100k in 0.5-0.8 s of its CPU).
_ECHO_EVERY = 1 << 20

Owner = TypeVar("Owner", bound=Hashable)


class BundleWriter(Generic[Owner]):
    """Messages added to one bundle, flushed in slices; `commit()` ends it.

    Each `add` names the owner of each message (what a rejection is reported
    against); messages beyond the owners given are owned by nobody, and a
    rejection of one of those is raised by `commit`.
    """

    def __init__(self, channel: SwitchChannel, wait: Callable[[Future[bytes]], bytes]) -> None:
        self.channel = channel
        self._wait = wait
        self._bundle_id = 0
        self._opened: Future[bytes] | None = None
        self._buffer = bytearray()
        # (first xid, owners) of each `add`: its messages took consecutive xids.
        self._ranges: list[tuple[int, int, Sequence[Owner]]] = []
        self.count = 0
        self._since_echo = 0  # bytes of adds sent since the last echo request

    @property
    def opened(self) -> bool:
        return self._opened is not None

    def add(self, messages: Sequence[bytes], owners: Sequence[Owner] = ()) -> None:
        if not messages:
            return
        channel = self.channel
        if self._opened is None:
            self._bundle_id = channel.next_xid()
            open_xid = channel.next_xid()
            self._opened = channel.expect(open_xid)
            self._buffer += ofmsg.bundle_open(self._bundle_id, open_xid)
        # The add's whole xid range at once, so concurrent requests never collide.
        first = channel.reserve_xids(len(messages))
        self._ranges.append((first, len(messages), owners))
        self.count += len(messages)
        buffer, bundle_id = self._buffer, self._bundle_id
        for start in range(0, len(messages), _PIECE):
            buffer += ofmsg.bundle_adds(bundle_id, first + start, messages[start : start + _PIECE])
            if len(buffer) >= _SEND_SLICE:
                self._since_echo += len(buffer)
                if self._since_echo >= _ECHO_EVERY:
                    buffer += ECHO_REQUEST
                    self._since_echo = 0
                channel.send(buffer)
                buffer = bytearray()
        self._buffer = buffer

    def discard(self) -> None:
        """Drop the bundle (nothing of it is applied); the reply is not waited for."""
        if self._opened is None:
            return
        self._buffer = bytearray()
        self._opened = None
        with contextlib.suppress(SwitchDisconnected):  # the switch drops it with the connection
            self.channel.send(ofmsg.bundle_discard(self._bundle_id, self.channel.next_xid()))

    def commit(self) -> tuple[bool, dict[Owner, OpenFlowError]]:
        """Commit (nothing added: nothing sent, committed). Returns whether the commit
        landed and the owners of rejected messages (a message rejected when added is
        left out of a commit that still lands). Raises OpenFlowError when the bundle
        failed for a reason no owned message explains."""
        if self._opened is None:
            return True, {}
        channel = self.channel
        commit_xid = channel.next_xid()
        committed = channel.expect(commit_xid)
        self._buffer += ofmsg.bundle_commit(self._bundle_id, commit_xid)
        channel.allow_silence(commit_silence(self.count))
        channel.send(self._buffer)
        self._buffer = bytearray()
        self._wait(self._opened)
        commit_error: OpenFlowError | None = None
        try:
            self._wait(committed)
        except OpenFlowError as error:
            commit_error = error
            # A failed commit may be reported before the error naming the add that
            # failed it; a barrier's reply comes after every error the commit caused.
            self._wait(channel.barrier())
        # Errors for adds rejected on arrival precede the commit's reply.
        failed: dict[Owner, OpenFlowError] = {}
        unexplained: list[OpenFlowError] = []
        for first, count, owners in self._ranges:
            for xid, rejection in channel.take_errors(range(first, first + count)).items():
                if xid - first < len(owners):
                    failed[owners[xid - first]] = rejection
                else:
                    unexplained.append(rejection)
        if commit_error is not None and not failed:
            raise commit_error
        if unexplained:
            raise unexplained[0]
        return commit_error is None, failed
