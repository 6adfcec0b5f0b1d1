"""Flush, on one switch, the conntrack entries of UDP flows pinned to backends that
no longer take new flows (which ones and why: controller.core.pipeline.udp_pins).

The flush follows the flows: it is sent once the switch has confirmed the flows that
stopped picking the backend, so the next datagram of a flushed flow is picked among
the backends left. It is sent a second time REPEAT_AFTER later: ovs-vswitchd
revalidates its datapath flow cache after a flow-table change on its own threads,
not before confirming the change, and a cached translation of the old flows (a
flow's first datagram, kept up to 10 s) could commit the flow to the old backend
again in between.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from controller import metrics
from controller.core import ofmsg
from controller.core.flows import IP_PROTO_UDP, int_to_ip
from controller.core.pipeline.udp_pins import UdpBackend, UdpBackends, stale_udp_backends
from controller.openflow.channel import OpenFlowError, SwitchChannel

log = logging.getLogger(__name__)

REPEAT_AFTER: Final = 1.0  # seconds; datapath revalidation takes milliseconds


class UdpPinFlusher:
    """One per switch connection: what its conntrack may still hold is what it was
    given on this connection (nothing is known at first). Used by the host agent's
    worker only."""

    def __init__(self, channel: SwitchChannel, *, timeout: float) -> None:
        self._channel = channel
        self._timeout = timeout
        self._given: frozenset[UdpBackend] | None = None  # picked, as the switch was last told
        self._again: frozenset[UdpBackend] = frozenset()
        self._again_at = 0.0
        self._unsupported = False

    def flows_applied(self, now: UdpBackends) -> float | None:
        """The switch holds the flows computed with `now`: flush the entries of the
        backends they stopped picking (and repeat, if due, an earlier flush). Returns
        the seconds until a repeat is due, or None. Raises SwitchDisconnected or
        TimeoutError when the switch cannot be reached: nothing is taken as flushed."""
        clock = time.monotonic()
        stale = stale_udp_backends(self._given, now)
        due = self._again if self._again and clock >= self._again_at else frozenset()
        flush = stale | (due - now.picked)
        if flush:
            self._flush(flush)
        self._given = now.picked
        if due:
            self._again = frozenset()
        if stale:
            self._again |= stale
            self._again_at = clock + REPEAT_AFTER
        self._again -= now.picked  # picked again meanwhile: its new flows stay
        return max(self._again_at - clock, 0.0) if self._again else None

    def _flush(self, backends: frozenset[UdpBackend]) -> None:
        if self._unsupported:
            return
        channel = self._channel
        ordered = sorted(backends)
        first = channel.reserve_xids(len(ordered))
        messages = [
            ofmsg.ct_flush(
                first + i,
                zone=b.zone,
                ip_proto=IP_PROTO_UDP,
                orig=ofmsg.CtTuple(dst=b.vip, dst_port=b.vip_port),
                reply=ofmsg.CtTuple(src=b.ip, src_port=b.port),
            )
            for i, b in enumerate(ordered)
        ]
        channel.send(b"".join(messages))
        channel.barrier().result(timeout=self._timeout)
        errors = channel.take_errors(range(first, first + len(ordered)))
        for index, backend in enumerate(ordered):
            error = errors.get(first + index)
            if error is not None:
                self._refused(backend, error)
                if self._unsupported:
                    return
            else:
                metrics.CONNTRACK_FLUSHES.inc()
                log.info(
                    "datapath %016x: UDP flows of %s:%d (zone %d) pinned to %s:%d flushed",
                    channel.datapath_id,
                    int_to_ip(backend.vip),
                    backend.vip_port,
                    backend.zone,
                    int_to_ip(backend.ip),
                    backend.port,
                )

    def _refused(self, backend: UdpBackend, error: OpenFlowError) -> None:
        # OVS before 3.1 does not know NXT_CT_FLUSH (a bad-request error): say it once,
        # stop asking; the pinned flows then wait for their entries to idle out.
        self._unsupported = error.type == ofmsg.OFPET_BAD_REQUEST
        log.warning(
            "datapath %016x refused to flush the UDP flows pinned to %s:%d: %s%s",
            self._channel.datapath_id,
            int_to_ip(backend.ip),
            backend.port,
            error,
            " (no NXT_CT_FLUSH before OVS 3.1: such flows stay until they go idle 30 s)"
            if self._unsupported
            else "",
        )
