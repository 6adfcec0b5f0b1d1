"""Waiting in tests for something another process does (a switch, the service, libvirt)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")

# Bounds the wait only: no test asserts how fast something happens.
DEFAULT_TIMEOUT = 15.0


def eventually(
    probe: Callable[[], _T],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
) -> _T:
    """Call `probe` until it returns something truthy and return that.

    Fails the test (AssertionError naming `what`) once `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)
