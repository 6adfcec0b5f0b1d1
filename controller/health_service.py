"""The I/O shell of the load-balancer health checks: a timer thread and packet-out.

Everything it decides comes from `controller.core.health.HealthMonitor`, which
is given the clock's readings and a random source; this module only owns the
thread, the clock and the lock around the monitor.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Final

from controller.core.health import BackendKey, HealthChange, HealthMonitor, Probe, probe_targets
from controller.core.model import BackendHealthUpdate, Snapshot

log = logging.getLogger(__name__)

_MAX_WAIT: Final = 1.0  # the service thread re-checks at least this often

SendFrame = Callable[[str, str, bytes], bool]  # (host_id, interface, frame) -> sent?
# The same, followed by a barrier: resolves once the switch has sent the frame
# (None: not sent at all).
SendConfirmed = Callable[[str, str, bytes], "Future[bytes] | None"]
HealthChanged = Callable[[Sequence[BackendHealthUpdate]], None]


class HealthService:
    """Runs a HealthMonitor on a thread: sends due probes, expires silent ones, and
    reports every change through `on_change` (which records it and recomputes flows)."""

    def __init__(
        self,
        *,
        send: SendFrame,
        send_confirmed: SendConfirmed,
        on_change: HealthChanged,
        probes_from: Callable[[str], bool] | None = None,
    ) -> None:
        """`probes_from(host_id)`: whether this process probes backends on that host
        (controller replicas: only the master of the backend's switch can send the
        probes and gets the replies); None: every host."""
        self._probes_from = probes_from
        self._send = send
        self._send_confirmed = send_confirmed
        self._on_change = on_change
        self._monitor = HealthMonitor(rng=random.Random())
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._vips: dict[BackendKey, int] = {}
        self._thread = threading.Thread(target=self._run, name="lb-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def update(self, snapshot: Snapshot) -> None:
        targets = tuple(
            t
            for t in probe_targets(snapshot)
            if self._probes_from is None or self._probes_from(t.host_id)
        )
        backends = [
            ((lb.id, b.ip, b.port), b) for lb in snapshot.load_balancers for b in lb.backends
        ]
        stored = {key: b.healthy for key, b in backends}
        stored_unknown = {key: b.health_unknown for key, b in backends}
        with self._lock:
            changes = self._monitor.sync(targets, stored, time.monotonic(), stored_unknown)
            self._vips = {t.key: t.vip for t in targets}
        self._report(changes)
        self._wake.set()

    def health(self) -> dict[BackendKey, bool]:
        with self._lock:
            return self._monitor.health()

    def unknown(self) -> dict[BackendKey, str]:
        with self._lock:
            return self._monitor.unknown()

    def probe_reply(self, frame: bytes) -> None:
        """A packet-in from the probe-reply flows (os-ken's thread: never blocks long)."""
        with self._lock:
            outcome = self._monitor.on_reply(frame, time.monotonic())
        for follow in outcome.follow_up:
            self._send(follow.host_id, follow.interface, follow.frame)
        self._report(outcome.changes)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # a bug in one round must not end health checking
                log.exception("health check round failed")
            with self._lock:
                wakeup = self._monitor.next_wakeup()
            delay = _MAX_WAIT if wakeup is None else wakeup - time.monotonic()
            self._wake.wait(timeout=min(_MAX_WAIT, max(0.0, delay)))
            self._wake.clear()

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            changes = self._monitor.expire(now)
            due = self._monitor.due(now)
        self._report(changes)
        for probe in due:
            with self._lock:
                vip = self._vips.get(probe.key, 0)
            sent = self._send_confirmed(probe.host_id, probe.interface, probe.frame)
            if sent is None:
                with self._lock:
                    unsent = self._monitor.not_sent(probe, vip)
                self._report(unsent)
            else:
                sent.add_done_callback(functools.partial(self._confirmed, probe=probe, vip=vip))

    def _confirmed(self, barrier: Future[bytes], *, probe: Probe, vip: int) -> None:
        """The switch answered the barrier after the probe (os-ken's thread)."""
        if barrier.exception() is None:
            with self._lock:
                self._monitor.delivered(probe, vip)

    def _report(self, changes: Sequence[HealthChange]) -> None:
        if not changes:
            return
        at = datetime.now(UTC)
        for change in changes:
            lb_id, ip, port = change.key
            verdict = "healthy" if change.healthy else "unhealthy"
            if change.unknown is not None:
                verdict = f"of unknown health ({change.unknown}; still {verdict})"
            log.info("load balancer %s: backend %s:%d is %s", lb_id, ip, port, verdict)
        self._on_change(
            [
                BackendHealthUpdate(c.key[0], c.key[1], c.key[2], c.healthy, at, c.unknown)
                for c in changes
            ]
        )


__all__ = ["HealthChanged", "HealthService", "SendConfirmed", "SendFrame"]
