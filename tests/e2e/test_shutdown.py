"""SIGTERM stops the service promptly whatever long-polls are open; a client that
goes away stops its server-side wait at once. The real service, over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import pytest

from api.client import FabricClient
from api.launcher import ServiceProcess
from api.paths import API_PREFIX
from tests.support.eventually import eventually
from tests.support.fabric import Fabric
from tests.support.reliability import record

pytestmark = pytest.mark.e2e

# Issue 9, item 8.
SHUTDOWN_BOUND = 5.0
LONG_POLLS = 8


def _port_never_active(service: ServiceProcess) -> str:
    """An unbound port: it stays DOWN, so `?wait=active` waits its whole timeout."""
    with FabricClient(service.base_url, service.admin_token) as client:
        tenant = client.create("tenants", name="waiting")["id"]
        net = client.create("networks", tenant_id=tenant, name="w", type="vlan", cidr="10.9.0.0/24")
        return str(client.create("ports", network_id=net["id"], name="p")["id"])


def _wait_url(service: ServiceProcess, port_id: str) -> str:
    return f"{service.base_url}{API_PREFIX}/ports/{port_id}?wait=active&timeout=300"


def test_sigterm_exits_within_bound_with_long_polls_open(fabric: Fabric) -> None:
    # Two connected hosts with VMs: the controller has agents and switches to let go.
    fabric.vm_pair("vlan", "10.30.0.0/24")
    service = fabric.service
    port_id = _port_never_active(service)
    answers: list[Any] = []
    headers = {"Authorization": f"Bearer {service.admin_token}"}

    def long_poll() -> None:
        try:
            response = httpx.get(_wait_url(service, port_id), headers=headers, timeout=60)
            answers.append((response.status_code, response.json()["status"]))
        except httpx.HTTPError as exc:
            answers.append(exc)

    polls = [threading.Thread(target=long_poll, daemon=True) for _ in range(LONG_POLLS)]
    for poll in polls:
        poll.start()
    time.sleep(1.0)  # every long-poll is in its wait loop (each reads the port every 0.1 s)
    assert not answers, answers

    signalled = time.monotonic()
    status = service.stop(timeout=60)
    took = time.monotonic() - signalled
    record(
        "Shutdown",
        f"SIGTERM with {LONG_POLLS} `?wait=active` long-polls open: seconds until exit",
        took,
        "s",
        requirement=f"<= {SHUTDOWN_BOUND:g} s, exit status 0",
    )
    assert status == 0, f"exit status {status}; log:\n{service.log_tail()}"
    assert took <= SHUTDOWN_BOUND, f"exited after {took:.1f} s"
    for poll in polls:
        poll.join(timeout=10)
    # Every long-poll was answered (the port as it is) before the process went.
    assert answers == [(200, "DOWN")] * LONG_POLLS, answers
    assert "Application shutdown complete" in service.log_tail()


def test_a_client_that_disconnects_stops_its_wait(service: ServiceProcess) -> None:
    port_id = _port_never_active(service)
    path = _wait_url(service, port_id).removeprefix(service.base_url)
    with socket.create_connection(("127.0.0.1", service.api_port)) as raw:
        raw.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {service.admin_token}\r\n\r\n".encode()
        )
        time.sleep(1.0)  # the server is waiting (no answer: the port stays DOWN)
        raw.setblocking(False)
        with pytest.raises(BlockingIOError):
            raw.recv(1)
    closed = time.monotonic()
    line = eventually(
        lambda: next(
            (x for x in service.log_tail(10_000).splitlines() if "wait stopped" in x), None
        ),
        what="the server-side wait to stop",
        timeout=10,
        interval=0.02,
    )
    stopped = time.monotonic() - closed
    assert f"port {port_id}: client gone" in line, line
    record(
        "Shutdown",
        "client closes its `?wait=active` connection: seconds until the wait is logged stopped",
        stopped,
        "s",
        requirement="at once (the wait polls every 0.1 s)",
    )
    assert stopped < 10  # bounded by eventually; the figure is recorded
