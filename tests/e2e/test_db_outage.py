"""PostgreSQL stopped under a running fabric: the API says so, forwarding goes on,
the controller resumes, and nothing a client was told is stored gets lost.

The service runs on a throwaway PostgreSQL server (tests/support/postgres.py).
While a client keeps creating ports and two VMs ping each other across hosts,
the server is stopped for OUTAGE_SECONDS (issue 9 item 7's 30 s) and started
again.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from api.launcher import ServiceProcess
from api.paths import API_PREFIX, HEALTH_PATH
from lab.hosts import Lab
from tests.support.eventually import eventually
from tests.support.fabric import Fabric, fabric_of, running_service
from tests.support.metrics import scrape_service, total
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.reliability import record

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 30.0
PROBLEM_JSON = "application/problem+json"
PING_INTERVAL = 0.05


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_service(tmp_path: Path, postgres: PostgresServer) -> Iterator[ServiceProcess]:
    env = {"OVS_FABRIC_DATABASE_URL": postgres.url, "OVS_FABRIC_RECONCILE_INTERVAL": "2"}
    with running_service(tmp_path / "service", extra_env=env) as svc:
        yield svc


@pytest.fixture
def pg_fabric(lab: Lab, pg_service: ServiceProcess) -> Iterator[Fabric]:
    with fabric_of(lab, pg_service) as found:
        yield found


@dataclass
class Writer:
    """Creates a port every `pause` seconds until stopped; keeps every answer."""

    service: ServiceProcess
    network_id: str
    pause: float = 0.2
    acknowledged: list[str] = field(default_factory=list)  # ids answered 201
    unavailable: list[httpx.Response] = field(default_factory=list)  # 503s
    other: list[str] = field(default_factory=list)  # anything else: a failure
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.service.admin_token}"}
        url = f"{self.service.base_url}{API_PREFIX}/ports"
        with httpx.Client(headers=headers, timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    answer = http.post(url, json={"network_id": self.network_id, "name": f"w{n}"})
                except httpx.HTTPError as exc:
                    self.other.append(f"{type(exc).__name__}: {exc}")
                else:
                    if answer.status_code == 201:
                        self.acknowledged.append(answer.json()["id"])
                    elif answer.status_code == 503:
                        self.unavailable.append(answer)
                    else:
                        self.other.append(f"{answer.status_code}: {answer.text[:300]}")
                self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()


def _healthy(service: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{service.base_url}{HEALTH_PATH}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _assert_unavailable_problem(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON, answer.headers
    body = answer.json()
    assert body["status"] == 503 and "database" in body["detail"], body
    assert "Traceback" not in answer.text and "psycopg" not in answer.text, answer.text


def test_postgres_outage(pg_fabric: Fabric, postgres: PostgresServer) -> None:
    fabric = pg_fabric
    service = fabric.service
    a, _b = fabric.vm_pair("vxlan", "10.40.0.0/24")
    assert a.ping("10.40.0.2")  # warm the tunnel path (first packet resolves the underlay)
    network = fabric.network_ids["n"]
    tenant = fabric.client.get("networks", network)["tenant_id"]
    # The writer's ports go to a network of their own: they take no address of "n".
    writer = Writer(service, fabric.network(tenant, "w", "vlan", "10.41.0.0/16"))
    writing = threading.Thread(target=writer.run, daemon=True)
    writing.start()
    count = int((OUTAGE_SECONDS + 8) / PING_INTERVAL)
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", a.netns, "ping", "-n", "-q", "-c", str(count),
         "-i", str(PING_INTERVAL), "-W", "1", "10.40.0.2"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        before_outage = len(writer.acknowledged)
        errors_before = total(scrape_service(service), "ovs_fabric_database_errors_total")
        postgres.stop()
        stopped = time.monotonic()

        # During the outage: requests needing the database get 503 problem+json.
        eventually(lambda: not _healthy(service), what="/healthz unhealthy", timeout=10)
        health = httpx.get(f"{service.base_url}{HEALTH_PATH}", timeout=5)
        _assert_unavailable_problem(health)
        auth = {"Authorization": f"Bearer {service.admin_token}"}
        for method, path, body in (
            ("GET", "/ports", None),
            ("GET", f"/networks/{network}", None),
            ("POST", "/ports", {"network_id": network, "name": "during"}),
        ):
            answer = httpx.request(
                method, f"{service.base_url}{API_PREFIX}{path}", headers=auth, json=body, timeout=30
            )
            _assert_unavailable_problem(answer)

        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        postgres.start()
        restarted = time.monotonic()
        eventually(lambda: _healthy(service), what="/healthz healthy again", timeout=30)
        healthy_after = time.monotonic() - restarted
        # The driver's errors during the outage were counted.
        errors = total(scrape_service(service), "ovs_fabric_database_errors_total")
        assert errors > errors_before, (errors_before, errors)

        # The controller resumes: a port created after the outage becomes ACTIVE.
        fabric.add_vm("h2", network, "c", "10.40.0.3", wait=False)
        fabric.wait_active("c", timeout=60)
        active_after = time.monotonic() - restarted
        assert a.wait_for_ping("10.40.0.3", timeout=30)
        time.sleep(1.0)
    finally:
        writer.stop()
        writing.join(timeout=60)
        out, _ = pinger.communicate(timeout=OUTAGE_SECONDS + 60)

    summary = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert summary is not None, out
    sent, received = int(summary.group(1)), int(summary.group(2))
    during = len(writer.acknowledged) - before_outage
    assert writer.other == [], writer.other
    assert writer.unavailable, "the writer never met the outage"
    for answer in writer.unavailable:
        _assert_unavailable_problem(answer)

    # Every port acknowledged with 201, before, during or after the outage, is there.
    stored = {p["id"] for p in fabric.client.list("ports", limit=1000)}
    missing = [pid for pid in writer.acknowledged if pid not in stored]

    outage = f"PostgreSQL stopped {OUTAGE_SECONDS:g} s"
    record("Database outage", f"{outage}: ping a->b every {PING_INTERVAL:g} s, packets lost",
           sent - received, f"of {sent}", requirement="0")  # fmt: skip
    record("Database outage", f"{outage}: ports acknowledged 201 then missing",
           len(missing), f"of {len(writer.acknowledged)}", requirement="0")  # fmt: skip
    record("Database outage", f"{outage}: POST /ports answered 503 problem+json",
           len(writer.unavailable), "requests", requirement="503, never 500")  # fmt: skip
    record("Database outage", "PostgreSQL back: seconds until /healthz answers 200",
           healthy_after, "s", requirement="resumes")  # fmt: skip
    record("Database outage", "PostgreSQL back: seconds until a port created then is ACTIVE",
           active_after, "s", requirement="resumes")  # fmt: skip

    assert received == sent, out
    assert missing == [], missing
    assert during >= 0
    log = service.log_tail(100_000)
    assert "Exception in ASGI application" not in log, log
