"""The unix-socket relay takes every bridge of an OVS reconnecting at once: beyond the
listen backlog a switch's connect fails at once and it waits out its reconnect backoff
(bench/capacity.py: a tenth of 100 switches came back 2 s late with a backlog of 16)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.openflow.relay import UnixToTcpRelay

pytestmark = pytest.mark.unit

SWITCHES = 64  # bridges of one ovs-vswitchd behind one relay socket


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[UnixToTcpRelay]:
    with socket.create_server(("127.0.0.1", 0), backlog=SWITCHES) as controller:
        relay = UnixToTcpRelay(tmp_path / "ofp.sock", controller.getsockname()[:2])
        relay.start()
        try:
            yield relay
        finally:
            relay.close()


def test_every_switch_reconnecting_at_once_is_taken(relay: UnixToTcpRelay) -> None:
    clients: list[socket.socket] = []
    # The relay busy with one connection meanwhile (its accept loop holds at the lock),
    # so the others wait in the listen backlog, as when the controller is slow to accept.
    with relay._lock:
        try:
            for _ in range(SWITCHES):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                clients.append(client)
                client.setblocking(False)
                client.connect(str(relay.path))  # BlockingIOError: the backlog is full
        finally:
            for client in clients:
                client.close()
