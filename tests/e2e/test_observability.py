"""Observability on a running service over a real OVS lab: /metrics, JSON logs, /ui.

One module-scoped lab serves every test: hosts h1 and h2 (VXLAN tunnel and VLAN
trunk), tenant acme with the load-balancer lab (client c, backends b1..b3 behind
a VIP, real health probes), tenant other with a VLAN network and one VM. The
service runs as a child process with JSON logs and the token-less exporter
listener. The page is driven in Debian's headless Chromium through chromedriver;
its screenshots are kept under var/artifacts/ (paths printed).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from api.launcher import ServiceProcess, free_tcp_port
from lab.hosts import require_lab_tools
from tests.support.eventually import eventually
from tests.support.fabric import Fabric, lab_and_service
from tests.support.load_balancer import LbLab, Servers, build
from tests.support.metrics import Samples, scrape, total, value

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1000",
)


@dataclass
class ObservedLab:
    lb: LbLab
    servers: Servers
    other_tenant: str
    other_network: str
    metrics_url: str

    @property
    def fabric(self) -> Fabric:
        return self.lb.fabric

    @property
    def service(self) -> ServiceProcess:
        return self.fabric.service

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.service.admin_token}"}

    def tenant_token(self, tenant_id: str) -> str:
        answer = httpx.post(
            f"{self.service.base_url}/api/v1/tenants/{tenant_id}/tokens",
            json={"name": f"ui-{tenant_id[:8]}"},
            headers=self.admin_headers(),
        )
        answer.raise_for_status()
        token: str = answer.json()["token"]
        return token

    def host_name(self, short: str) -> str:
        return str(self.fabric.client.get("hosts", self.fabric.host_ids[short])["name"])


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedLab]:
    require_lab_tools()
    workdir = tmp_path_factory.mktemp("observability")
    metrics_port = free_tcp_port()
    env = {
        "OVS_FABRIC_LOG_FORMAT": "json",
        "OVS_FABRIC_METRICS_PORT": str(metrics_port),
        "OVS_FABRIC_RECONCILE_INTERVAL": "2",
    }
    with lab_and_service(workdir / "service", extra_env=env) as fabric, Servers() as servers:
        lb = build(fabric, servers)
        other = fabric.client.create("tenants", name="other")["id"]
        other_net = fabric.network(other, "vlan-net", "vlan", "10.9.0.0/24")
        fabric.add_vm("h2", other_net, "o1", "10.9.0.10")
        yield ObservedLab(lb, servers, other, other_net, f"http://127.0.0.1:{metrics_port}/metrics")


# ---- /metrics -----------------------------------------------------------------------------


def test_metrics_are_admin_only_on_the_api_port_and_open_on_the_exporter(
    observed: ObservedLab,
) -> None:
    url = f"{observed.service.base_url}/metrics"
    assert httpx.get(url).status_code == 401
    tenant = {"Authorization": f"Bearer {observed.tenant_token(observed.other_tenant)}"}
    assert httpx.get(url, headers=tenant).status_code == 403
    admin = scrape(url, observed.admin_headers())
    exporter = scrape(observed.metrics_url)
    # One registry behind both.
    assert value(admin, "ovs_fabric_switches_connected") == 2
    assert value(exporter, "ovs_fabric_switches_connected") == 2


def test_metrics_move_with_the_fabric(observed: ObservedLab) -> None:
    fabric = observed.fabric
    h1, h2 = observed.host_name("h1"), observed.host_name("h2")
    before = scrape(observed.metrics_url)
    for host in (h1, h2):
        assert value(before, "ovs_fabric_switch_connected", host=host) == 1
        assert value(before, "ovs_fabric_ovsdb_connected", host=host) == 1
        assert value(before, "ovs_fabric_flows", host=host) > 0
    # The load balancer's select group lives on every host with a client or a backend.
    assert value(before, "ovs_fabric_groups", host=h1) > 0
    lb_id = observed.lb.lb["id"]
    healthy = {
        dict(labels)["backend"]: v
        for (name, labels), v in before.items()
        if name == "ovs_fabric_backend_healthy" and dict(labels)["load_balancer"] == lb_id
    }
    assert healthy == {"10.5.0.11:8080": 1, "10.5.0.12:8080": 1, "10.5.0.13:8080": 1}

    # A new VM: its port goes DOWN -> ACTIVE, the switch gets flows, passes run.
    fabric.add_vm("h1", observed.lb.network, "m1", "10.5.0.30")
    port_id = fabric.port_ids["m1"]
    activations = "ovs_fabric_port_activation_seconds_count"

    def counted() -> Samples | None:
        # Observed right after the status commit, which may wake the waiter first.
        now = scrape(observed.metrics_url)
        return now if value(now, activations) >= value(before, activations) + 1 else None

    after = eventually(counted, "the activation to be counted", timeout=10)
    assert value(after, "ovs_fabric_flows", host=h1) > value(before, "ovs_fabric_flows", host=h1)
    passes = "ovs_fabric_reconcile_passes_total"
    assert value(after, passes, result="ok") > value(before, passes, result="ok")
    assert value(after, "ovs_fabric_reconcile_duration_seconds_count") > value(
        before, "ovs_fabric_reconcile_duration_seconds_count"
    )
    changes = "ovs_fabric_reconcile_changes_total"
    assert value(after, changes, change="flow_add") > value(before, changes, change="flow_add")
    # Latency by route template and status, never by raw path.
    route = {"method": "GET", "route": "/api/v1/ports/{port_id}", "status": "200"}
    assert value(after, "ovs_fabric_http_request_duration_seconds_count", **route) >= 1
    assert not any(port_id in dict(labels).get("route", "") for _n, labels in after)
    # No database error on the way; the series exists from the first one on.
    assert total(after, "ovs_fabric_database_errors_total") == total(
        before, "ovs_fabric_database_errors_total"
    )


# ---- JSON logs ----------------------------------------------------------------------------


def json_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    """The JSON log lines (uvicorn's first two lines, before the app starts, are text)."""
    found = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_json_logs_carry_request_host_port_and_network_ids(observed: ObservedLab) -> None:
    fabric = observed.fabric
    port_id = fabric.port_ids["m1"] if "m1" in fabric.port_ids else fabric.port_ids["c"]
    url = f"{observed.service.base_url}/api/v1/ports/{port_id}"
    given = httpx.get(url, headers={**observed.admin_headers(), "X-Request-ID": "obs-req-42"})
    assert given.headers["X-Request-ID"] == "obs-req-42"
    # A request id that could forge a log line is replaced by a fresh one.
    forged = httpx.get(url, headers={**observed.admin_headers(), "X-Request-ID": 'a b"}'})
    generated = forged.headers["X-Request-ID"]
    assert generated != 'a b"}' and len(generated) == 32
    anonymous = httpx.get(url).headers["X-Request-ID"]
    assert anonymous not in (generated, "obs-req-42")

    def logged(request_id: str) -> dict[str, Any] | None:
        records = json_lines(observed.service)
        return next((r for r in records if r.get("request_id") == request_id), None)

    record = eventually(lambda: logged("obs-req-42"), "the request's log line", timeout=10)
    assert record["port_id"] == port_id and record["logger"] == "uvicorn.access"
    assert "GET /api/v1/ports/" in record["event"] and record["level"] == "info"
    assert "timestamp" in record
    assert (logged(generated) or {}).get("port_id") == port_id

    # The controller's lines name their host; a port's status change names the port
    # and its network.
    h1 = observed.host_name("h1")
    records = json_lines(observed.service)
    activated = [
        r
        for r in records
        if r.get("port_id") == fabric.port_ids["c"] and r.get("status") == "ACTIVE"
    ]
    assert activated, "no log line for port c going ACTIVE"
    assert activated[0]["network_id"] == observed.lb.network and activated[0]["host"] == h1
    assert any(r.get("host") == h1 and "flows" in r["event"] for r in records)
    # JSON from the start of `serve`: the migration's lines too, before the app runs
    assert any(r["event"].startswith("Running upgrade") for r in records)


# ---- /ui ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="ovs-fabric-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(
            service=ChromeService(executable_path="/usr/bin/chromedriver"), options=options
        )
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, 30, poll_frequency=0.2).until(condition, f"waiting for {what}")


def sign_in(driver: WebDriver, base_url: str, token: str) -> None:
    driver.get(f"{base_url}/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{base_url}/ui")
    field = wait_for(driver, lambda d: d.find_element(By.ID, "token"), "the login form")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "view").is_displayed(), "the drawing")


def drawn(driver: WebDriver, kind: str, **data: str) -> list[Any]:
    selector = f"svg g.{kind}" + "".join(f'[data-{k}="{v}"]' for k, v in data.items())
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def attribute_of(driver: WebDriver, kind: str, attribute: str, **data: str) -> str | None:
    found = drawn(driver, kind, **data)
    return found[0].get_attribute(f"data-{attribute}") if found else None


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.find_element(By.TAG_NAME, "body").screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_topology_page_draws_and_follows_the_fabric(
    observed: ObservedLab, browser: WebDriver
) -> None:
    fabric, base = observed.fabric, observed.service.base_url
    sign_in(browser, base, observed.service.admin_token)
    h1, h2 = observed.host_name("h1"), observed.host_name("h2")
    for host in (h1, h2):
        wait_for(
            browser,
            lambda d, host=host: attribute_of(d, "host", "openflow", name=host) == "true",
            f"{host} drawn connected",
        )
        assert attribute_of(browser, "host", "ovsdb", name=host) == "true"
        assert int(attribute_of(browser, "host", "flows", name=host) or 0) > 0
    tunnels = browser.find_elements(By.CSS_SELECTOR, "svg path.tunnel")
    assert {(t.get_attribute("data-a"), t.get_attribute("data-b")) for t in tunnels} == {(h1, h2)}
    assert browser.find_elements(By.CSS_SELECTOR, "svg line.trunk")
    for name in ("web", "vlan-net"):
        assert drawn(browser, "network", name=name)
    for vm in ("c", "b1", "b2", "b3", "o1"):
        assert attribute_of(browser, "port", "status", name=vm) == "ACTIVE"
    wait_for(
        browser,
        lambda d: len(drawn(d, "backend", health="healthy")) == 3,
        "three healthy backends",
    )

    # Changes show up without reloading: a new port goes ACTIVE, a backend goes down.
    fabric.add_vm("h2", observed.lb.network, "late", "10.5.0.31", wait=False)
    wait_for(
        browser,
        lambda d: attribute_of(d, "port", "status", name="late") == "ACTIVE",
        "the new port drawn ACTIVE",
    )
    observed.servers.kill("b3")
    wait_for(
        browser,
        lambda d: attribute_of(d, "backend", "health", ip="10.5.0.13") == "unhealthy",
        "backend b3 drawn unhealthy",
    )
    assert len(drawn(browser, "backend", health="healthy")) == 2
    screenshot(browser, "ui-admin.png")

    # A tenant token draws that tenant only: no hosts' names, no other tenant's objects.
    sign_in(browser, base, observed.tenant_token(observed.other_tenant))
    wait_for(browser, lambda d: drawn(d, "network", name="vlan-net"), "the tenant's network")
    wait_for(
        browser,
        lambda d: attribute_of(d, "port", "status", name="o1") == "ACTIVE",
        "the tenant's port",
    )
    assert [n.get_attribute("data-name") for n in drawn(browser, "network")] == ["vlan-net"]
    assert [p.get_attribute("data-name") for p in drawn(browser, "port")] == ["o1"]
    assert not drawn(browser, "lb") and not drawn(browser, "backend")
    drawing = browser.find_element(By.ID, "topology").get_attribute("outerHTML") or ""
    for secret in ("acme", ">web", "10.5.0.", observed.lb.lb["id"], observed.lb.network):
        assert secret not in drawing, f"{secret!r} leaked into a tenant's page"
    # Hosts are admin-only: the tenant sees where its ports are bound by id, no name.
    hosts = [g.get_attribute("data-name") for g in drawn(browser, "host")]
    assert hosts == [f"host {fabric.host_ids['h2'][:8]}"], hosts
    screenshot(browser, "ui-tenant.png")

    # Signing out forgets the token; a refused token brings the form back, with why.
    browser.find_element(By.ID, "signout").click()
    assert browser.execute_script("return sessionStorage.length") == 0
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    message = wait_for(
        browser, lambda d: d.find_element(By.ID, "login-error").text, "the refusal message"
    )
    assert "token" in message.lower()
    assert os.path.exists(ARTIFACTS / "ui-admin.png")
