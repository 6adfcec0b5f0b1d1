"""A host agent's worker sleeps until its next audit is due, not a whole reconcile
interval after whatever pass ran last: a pass for a change just before the audit was
due would otherwise put drift repair (flows, groups edited in place) off to almost two
intervals (measured: 18 s with the 10 s default)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from controller.core.model import HostSpec
from controller.host_agent import ControllerConfig, HostAgent

pytestmark = pytest.mark.unit

HOST = HostSpec("aaaaaaaa-0000-4000-8000-aaaaaaaaaaaa", "here", "unix:/nonexistent/db.sock")


def agent() -> HostAgent:
    config = ControllerConfig(reconcile_interval=10.0)
    store: Any = None  # never reached: the worker is not started
    return HostAgent(HOST, config=config, store=store, ovsdb_factory=lambda _: None)  # type: ignore[arg-type,return-value]


def test_the_worker_sleeps_until_the_audit_is_due() -> None:
    worker = agent()
    worker._last_audit = time.monotonic() - 7.0  # the last audit 7 s ago
    assert 2.0 < worker._until_audit() <= 3.0


def test_an_overdue_audit_waits_a_whole_interval() -> None:
    # Never audited, or the last pass could not reach the switch: no busy loop.
    worker = agent()
    assert worker._until_audit() == 10.0
    worker._last_audit = time.monotonic() - 25.0
    assert worker._until_audit() == 10.0


def test_a_flush_to_repeat_shortens_the_sleep() -> None:
    worker = agent()
    worker._last_audit = time.monotonic()
    worker._pins_repeat_at = time.monotonic() + 0.5
    assert 0.3 < worker._until_due() <= 0.5


def test_a_repeat_deadline_left_by_a_failed_pass_does_not_spin_the_worker() -> None:
    # A pass that cannot finish (no switch, a refused snapshot, not master) would leave
    # a deadline in the past and every later sleep at 0.
    worker = agent()
    worker._ovsdb = SimpleNamespace(close=lambda: None)  # type: ignore[assignment]
    worker._pins_repeat_at = time.monotonic() - 5.0
    worker.start()
    try:
        time.sleep(0.3)
        assert worker._passes_started <= 2
    finally:
        worker.stop()


def test_a_pass_failing_while_the_store_is_down_leaves_the_worker_running() -> None:
    # A database outage: the pass fails on a status write, and so does the report of
    # that failure. The worker must live on to reconcile the host once it is back.
    class StoreDown:
        def record_host_status(self, _status: object) -> None:
            raise ConnectionError("database unavailable")

    def failing_pass(_snapshot: object) -> None:
        raise ConnectionError("database unavailable")

    worker = agent()
    worker._ovsdb = SimpleNamespace(close=lambda: None)  # type: ignore[assignment]
    worker._store = StoreDown()  # type: ignore[assignment]
    worker._pass = failing_pass  # type: ignore[method-assign]
    worker._snapshot = object()  # type: ignore[assignment]
    worker.start()
    try:
        for number in (1, 2, 3):
            worker.wake()
            assert worker.wait_passed(number, timeout=5)
        assert worker._thread.is_alive()
    finally:
        worker.stop()
