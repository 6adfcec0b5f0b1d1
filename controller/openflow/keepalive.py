"""One thread keeps every switch connection honest: probes the silent, closes the dead.

It replaces os-ken's echo keepalive, which costs a thread per connection that
builds, serialises and queues an echo request every interval whether or not the
switch just spoke, and an event per echo reply (profile of 100 idle switches with
echoes every 0.3 s: 10.8% of a core, all but ~1% of it the echoes; see
BENCHMARKS.md, "Idle CPU at 100 switches"). Here:

- the receive path stamps every message with its arrival (any message is proof of
  life) and drops echo replies there, before os-ken builds a message object and an
  event for them (`install_receive_hook`);
- one thread looks at every connection each `ProbeSchedule.tick` and sends a
  pre-encoded echo request only to a switch silent for `probe_after`, once per
  silence, and closes a connection silent for `dead_after`;
- it also ends connections the switch closed: with native threads os-ken's sender
  stays blocked on its queue after the receiver saw the end, and the connection is
  only torn down (DEAD event) once something is queued; the keepalive queues it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any

from os_ken.controller.handler import DEAD_DISPATCHER
from os_ken.ofproto import ofproto_parser, ofproto_v1_3

from controller.core import ofmsg
from controller.openflow.probe_schedule import ProbeSchedule, Verdict

log = logging.getLogger(__name__)

# Our probes' xid; their replies never reach a channel (dropped in the receive path).
ECHO_XID = 0xFAB0EC40
ECHO_REQUEST = struct.pack("!BBHI", ofproto_v1_3.OFP_VERSION, ofmsg.OFPT_ECHO_REQUEST, 8, ECHO_XID)


class Keepalive:
    """Liveness of every OpenFlow connection of this process."""

    def __init__(self, schedule: ProbeSchedule) -> None:
        self.schedule = schedule
        # datapath -> monotonic time of its last message (written by its receive
        # thread) and of its last echo reply.
        self.last_heard: dict[Any, float] = {}
        self.last_echo_reply: dict[Any, float] = {}
        # When the probe of the current silence went out (written, or seen leave our
        # queue), or was queued behind messages of ours still unsent.
        self._probed_at: dict[Any, float] = {}
        self._queued_at: dict[Any, float] = {}
        # Until when a switch may stay silent because it works on a request of ours
        # (`allow_silence`): a big bundle's commit says nothing until it is done.
        self._patient_until: dict[Any, float] = {}
        self.probes_sent = 0
        self.declared_dead = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, datapath: Any) -> None:
        """A new connection: silent from now on until it speaks."""
        self.last_heard.setdefault(datapath, time.monotonic())

    def allow_silence(self, datapath: Any, seconds: float) -> None:
        """`datapath` may say nothing for `seconds` from now without being declared
        dead (it still gets probed): the reconciler asked it for that much work."""
        until = time.monotonic() + seconds
        if until > self._patient_until.get(datapath, 0.0):
            self._patient_until[datapath] = until

    def silent_for(self, datapath: Any, now: float | None = None) -> float | None:
        heard = self.last_heard.get(datapath)
        return None if heard is None else (time.monotonic() if now is None else now) - heard

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="openflow-keepalive", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.schedule.tick):
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """One look at every connection."""
        probe_after, dead = self.schedule.probe_after, DEAD_DISPATCHER
        for dp, heard in list(self.last_heard.items()):
            if now - heard < probe_after and dp.state != dead and dp.socket.fileno() >= 0:
                continue  # the usual case, kept short: spoke recently, still open
            try:
                self._look_closer(dp, heard, now)
            except Exception:  # one odd connection must not end liveness for the others
                log.exception("keepalive: switch %s", _name(dp))

    def _look_closer(self, dp: Any, heard: float, now: float) -> None:
        if not dp.is_active:  # os-ken's serve() returned: the connection is over
            self.last_heard.pop(dp, None)
            self.last_echo_reply.pop(dp, None)
            self._probed_at.pop(dp, None)
            self._queued_at.pop(dp, None)
            self._patient_until.pop(dp, None)
            return
        if dp.state == DEAD_DISPATCHER or dp.socket.fileno() < 0:
            # Closed (by the switch, by os-ken or by us): release the sender so the
            # connection ends; a no-op once the sender is gone.
            enqueue_nowait(dp, ECHO_REQUEST)
            return
        queue = dp.send_q
        if queue is None:
            # os-ken's sender ended (a send failed or timed out): nothing can be sent
            # on this connection any more, and its receiver may wait forever.
            log.warning("switch %s: sending failed, closing its connection", _name(dp))
            dp.close()
            return
        queued_at = self._queued_at.get(dp)
        if queued_at is not None:
            if queued_at >= heard and queue.queue:
                # The probe waits behind our own messages (a big install): the
                # switch is not late until it has them.
                return
            del self._queued_at[dp]  # heard since, or our queue drained: it is out
            if queued_at >= heard:
                self._probed_at[dp] = now
        probed_at = self._probed_at.get(dp, heard)
        probed_for = now - probed_at if probed_at > heard else None
        verdict = self.schedule.verdict(now - heard, probed_for=probed_for)
        if verdict is Verdict.PROBE:
            if write_if_sender_parked(dp, ECHO_REQUEST):
                self._probed_at[dp] = now
                self.probes_sent += 1
            elif enqueue_nowait(dp, ECHO_REQUEST):
                self._queued_at[dp] = now
                self.probes_sent += 1
        elif verdict is Verdict.DEAD and now < self._patient_until.get(dp, 0.0):
            return  # still within the time its work on our request may take
        elif verdict is Verdict.DEAD and not _has_unread_data(dp):
            # (Unread data: the switch spoke and it is our receiver that lags.)
            self.declared_dead += 1
            log.warning(
                "switch %s silent for %.1f s: closing its connection", _name(dp), now - heard
            )
            dp.close()  # DEAD event now
            enqueue_nowait(dp, ECHO_REQUEST)


def _name(datapath: Any) -> str:
    return "?" if datapath.id is None else f"{datapath.id:016x}"


def enqueue_nowait(datapath: Any, data: bytes) -> bool:
    """os-ken's `Datapath.send` without waiting: False if its queue is full (the switch
    does not read) or its sender is gone.

    NOTE: `send` blocks on the queue's semaphore while the queue is full; the one
    keepalive thread must never wait on one switch. Mirrors os-ken 4.2's send().
    """
    semaphore = datapath._send_q_sem
    if not semaphore.acquire(blocking=False):
        return False
    queue = datapath.send_q
    if queue is None:
        semaphore.release()
        return False
    queue.put((data, False))
    return True


def write_if_sender_parked(datapath: Any, data: bytes) -> bool:
    """Write `data` on the connection ourselves if os-ken's sender is idle: True if
    all of it went out, False (nothing written) otherwise.

    NOTE: saves waking the connection's sender thread for each probe, a third of
    a probe's CPU (bench.capacity: ~0.1 ms of ~0.3 ms). It is safe because the
    sender writes only what it takes from its queue, and `queue.get()` returns
    only holding the queue's mutex: while we hold that mutex with the queue empty
    and the sender waiting in `get()` (the one waiter of `not_empty`), nothing else
    can write on this socket. The write never blocks (Python keeps a socket with a
    timeout non-blocking underneath). Relies on CPython's queue.Queue and
    threading.Condition internals (mutex, queue, not_empty._waiters) and os-ken
    4.2's sender (`Datapath._send_loop`); a TLS socket (os-ken's own TLS listener,
    unused: see tls_front) is left to the sender.
    """
    queue = datapath.send_q
    sock = datapath.socket
    if queue is None or isinstance(sock, ssl.SSLSocket):
        return False
    with queue.mutex:
        if queue.queue or len(queue.not_empty._waiters) != 1:
            return False  # the sender is busy (or gone): queue it instead
        try:
            written = os.write(sock.fileno(), data)
        except OSError:  # full (EAGAIN), closed, reset: the queue or the receiver sees to it
            return False
        if written < len(data):
            # Cut short by a send buffer full to the byte: the rest must follow before
            # anything else can be sent, or the stream is garbage.
            _finish_write(sock, data[written:])
        return True


def _finish_write(sock: Any, rest: bytes) -> None:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    deadline = time.monotonic() + 1.0
    while rest and time.monotonic() < deadline:
        poller.poll(100)
        try:
            rest = rest[os.write(sock.fileno(), rest) :]
        except BlockingIOError:
            continue
        except OSError:
            return  # the connection is gone anyway
    if rest:  # a switch that has not read for a second: the stream cannot be mended
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _has_unread_data(datapath: Any) -> bool:
    fileno = datapath.socket.fileno()
    if fileno < 0:
        return False
    poller = select.poll()
    poller.register(fileno, select.POLLIN)
    return bool(poller.poll(0))


def install_receive_hook(keepalive: Keepalive) -> None:
    """Stamp every OpenFlow 1.3 message a switch sends, and drop echo replies.

    os-ken's receive loop hands each framed message to the version's parser
    (`ofproto_parser._MSG_PARSERS`) and dispatches an event for what it returns;
    None dispatches nothing. An echo reply only says the switch is alive, which
    the stamp records. Runs on each connection's receive thread: keep it short.
    """
    parsers = ofproto_parser._MSG_PARSERS
    version = ofproto_v1_3.OFP_VERSION
    parse = getattr(parsers[version], "parse_after_keepalive", parsers[version])
    last_heard = keepalive.last_heard
    last_echo_reply = keepalive.last_echo_reply
    monotonic = time.monotonic
    echo_reply = ofmsg.OFPT_ECHO_REPLY

    def receive(
        datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any
    ) -> Any:
        now = last_heard[datapath] = monotonic()
        if msg_type == echo_reply:
            last_echo_reply[datapath] = now
            return None
        return parse(datapath, version, msg_type, msg_len, xid, buf)

    receive.parse_after_keepalive = parse  # type: ignore[attr-defined]
    parsers[version] = receive
