"""`ovs-fabric` against a live service (uvicorn on loopback, SQLite): the resource
commands, status, apply, and the one-line errors.

One service for the module (the controller off: no switches here); the CLI runs
in-process through `main`, as the `ovs-fabric` script does, so every exit path
and printed line is the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api import cli
from api.cli.common import CliError
from api.cli.remote import CONFIG_ENV, TOKEN_ENV, URL_ENV
from api.client import FabricClient
from api.launcher import ServiceProcess, free_tcp_port

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        tmp_path_factory.mktemp("cli-service"),
        extra_env={"OVS_FABRIC_CONTROLLER_ENABLED": "false"},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


class Run:
    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                 service: ServiceProcess) -> None:
        self._capsys = capsys
        monkeypatch.setenv(URL_ENV, service.base_url)
        monkeypatch.setenv(TOKEN_ENV, service.admin_token)
        monkeypatch.setenv("COLUMNS", "200")
        monkeypatch.setenv(CONFIG_ENV, "/nonexistent/config.toml")
        monkeypatch.delenv("OVS_FABRIC_DEBUG", raising=False)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self._capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, f"{args}: exit {code}: {err}{out}"
        return out

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "-o", "json"))

    def error(self, *args: str) -> str:
        code, _out, err = self(*args)
        assert code == 2, f"{args}: exit {code}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ovs-fabric: error: "), err
        return lines[0]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        service: ServiceProcess) -> Run:
    return Run(capsys, monkeypatch, service)


def test_create_list_show_delete_every_resource(run: Run) -> None:
    assert "created tenant crud" in run.ok("tenants", "create", "crud", "--description", "d")
    run.ok("networks", "create", "front", "--tenant", "crud", "--type", "vlan",
           "--cidr", "10.1.0.0/24")
    run.ok("ports", "create", "vm1", "--network", "front", "--ip", "10.1.0.5")
    run.ok("lbs", "create", "http", "--network", "front", "--vip", "10.1.0.100", "--port", "80",
           "--backend", "10.1.0.5:8080:3")

    table = run.ok("ports", "list", "--network", "front")
    assert "vm1" in table and "10.1.0.5" in table and "front" in table and "DOWN" in table
    networks = run.json("networks", "list", "--tenant", "crud")
    assert isinstance(networks, list)
    assert [(n["name"], n["type"], n["cidr"]) for n in networks] == [
        ("front", "vlan", "10.1.0.0/24")]
    lb = run.json("lbs", "show", "http")
    assert isinstance(lb, dict)
    assert [(b["ip"], b["port"], b["weight"]) for b in lb["backends"]] == [("10.1.0.5", 8080, 3)]
    assert "10.1.0.100:80/tcp" in run.ok("lbs", "list")
    shown = run.ok("tenants", "show", "crud")
    assert "description" in shown and "crud" in shown

    for group, name in (("lbs", "http"), ("ports", "vm1"), ("networks", "front"),
                        ("tenants", "crud")):
        assert f" {name} (" in run.ok(group, "delete", name)
    assert run.json("tenants", "list") == []


def test_status_shows_hosts_and_ports_not_active(run: Run) -> None:
    run.ok("hosts", "create", "hv1", "--ovsdb-remote", "tcp:127.0.0.1:1", "--tunnel-ip",
           "192.0.2.1")
    run.ok("tenants", "create", "st")
    run.ok("networks", "create", "n", "--tenant", "st", "--cidr", "10.2.0.0/24")
    run.ok("ports", "create", "bound", "--network", "n", "--host", "hv1", "--interface", "tap9")
    run.ok("ports", "create", "unbound", "--network", "n")
    try:
        hosts = run.ok("hosts", "list")
        assert "hv1" in hosts and "tcp:127.0.0.1:1" in hosts

        summary = run.json("status")
        assert isinstance(summary, dict)
        assert [(h["name"], h["ovsdb_connected"], h["openflow_connected"])
                for h in summary["hosts"]] == [("hv1", False, False)]
        assert [(p["name"], p["host"], p["interface"], p["status"])
                for p in summary["ports_not_active"]] == [("bound", "hv1", "tap9", "DOWN")]
        text = run.ok("status")
        assert "ports not ACTIVE (1)" in text and "tap9" in text and "hv1" in text
    finally:
        for group, name in (("ports", "bound"), ("ports", "unbound"), ("networks", "n"),
                            ("tenants", "st"), ("hosts", "hv1")):
            run.ok(group, "delete", name)


APPLIED = """
tenants:
  - name: shop
    networks:
      - name: web
        type: vxlan
        cidr: 10.3.0.0/24
        ports:
          - {name: web1, ips: [10.3.0.11]}
          - {name: web2, ips: [10.3.0.12]}
        load_balancers:
          - name: http
            vip: 10.3.0.100
            port: 80
            backends: [{port_name: web1, port: 8080}, {port_name: web2, port: 8080}]
"""


def test_apply_shows_a_diff_is_idempotent_and_prunes_only_when_asked(
    run: Run, tmp_path: Path
) -> None:
    topology = tmp_path / "shop.yaml"
    topology.write_text(APPLIED)

    dry = run.ok("apply", str(topology), "--dry-run")
    assert "+ port shop/web/web1  ips=[10.3.0.11]" in dry and "5 to create" in dry
    assert run.json("tenants", "list") == []  # a dry run changes nothing

    assert "applied" in run.ok("apply", str(topology))
    again = run.ok("apply", str(topology))
    assert "nothing to change" in again and "0 created, 0 changed, 0 deleted" in again

    topology.write_text(APPLIED.replace("          - {name: web2, ips: [10.3.0.12]}\n", "")
                        .replace(", {port_name: web2, port: 8080}", ""))
    kept = run.ok("apply", str(topology))
    assert "~ load balancer shop/web/http  backends: [web1:8080 w1, web2:8080 w1] -> " \
           "[web1:8080 w1]" in kept
    assert "= kept, not in the file (--prune deletes them): port shop/web/web2\n" in kept
    assert sorted(p["name"] for p in run.json("ports", "list")) == ["web1", "web2"]  # type: ignore[union-attr]

    pruned = run.ok("apply", str(topology), "--prune")
    assert "- port shop/web/web2" in pruned and "1 deleted" in pruned
    assert [p["name"] for p in run.json("ports", "list")] == ["web1"]  # type: ignore[index]
    assert "nothing to change" in run.ok("apply", str(topology), "--prune")

    topology.write_text(APPLIED.replace("type: vxlan", "type: vlan"))
    assert run.error("apply", str(topology)) == (
        "ovs-fabric: error: network shop/web: type is 'vxlan', the file says 'vlan'; it cannot "
        "change in place (remove the entry, apply with --prune, then add it back)")

    # A port the file binds is waited for; this service runs no controller, so it
    # never becomes ACTIVE and apply says so in one line.
    topology.write_text(
        "hosts: [{name: hv9, ovsdb_remote: 'tcp:127.0.0.1:1'}]\n"
        "tenants: [{name: shop, networks: [{name: web, type: vxlan, cidr: 10.3.0.0/24, "
        "ports: [{name: web1, host: hv9, interface: tap-w1}]}]}]\n")
    assert run.error("apply", str(topology), "--timeout", "1") == (
        "ovs-fabric: error: port shop/web/web1 is still DOWN after 1s (hint: is interface "
        "tap-w1 present on its host? `ovs-fabric status` shows the hosts)")

    topology.write_text("hosts: []\ntenants: []\n")
    run.ok("apply", str(topology), "--prune")
    assert run.json("networks", "list") == [] and run.json("hosts", "list") == []


def test_errors_are_one_line_with_a_hint(run: Run, service: ServiceProcess,
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run.ok("tenants", "create", "errs")
    run.ok("networks", "create", "n", "--tenant", "errs")
    try:
        assert "HTTP 409 conflict: the tenant already has a network named 'n'" in run.error(
            "networks", "create", "n", "--tenant", "errs")
        assert "HTTP 422 invalid: cidr: '10.0.0.0/33' is not an IPv4 network" in run.error(
            "networks", "create", "m", "--tenant", "errs", "--cidr", "10.0.0.0/33")
        assert "HTTP 404 not found" in run.error(
            "tenants", "show", "00000000-0000-4000-8000-000000000000")
        assert "no tenant named 'nope' (hint: `ovs-fabric tenants list`)" in run.error(
            "tenants", "show", "nope")
        assert "HTTP 401 not authenticated" in run.error("tenants", "list", "--token", "wrong")
        with FabricClient(service.base_url, service.admin_token) as client:
            tenant_id = client.list_all("tenants")[0]["id"]
            tenant_token = client.create(f"tenants/{tenant_id}/tokens", name="t")["token"]
        assert "HTTP 403 forbidden" in run.error("hosts", "list", "--token", tenant_token)
        assert "hint: is `ovs-fabric serve` running there?" in run.error(
            "--url", f"http://127.0.0.1:{free_tcp_port()}", "tenants", "list")
        bad = tmp_path / "bad.yaml"
        bad.write_text("tenants: [{name: a, networks: [{name: n}]}]\n")
        assert run.error("apply", str(bad)) == (
            f"ovs-fabric: error: {bad}: tenants.0.networks.0.type: Field required")
        monkeypatch.delenv(TOKEN_ENV)
        assert "no API token: pass --token" in run.error("tenants", "list")
        config = tmp_path / "config.toml"
        config.write_text(f'url = "{service.base_url}"\ntoken = "{service.admin_token}"\n')
        monkeypatch.setenv(CONFIG_ENV, str(config))
        monkeypatch.delenv(URL_ENV)
        assert "errs" in run.ok("tenants", "list")  # url and token from the config file
    finally:
        run.ok("networks", "delete", "n", "--token", service.admin_token)
        run.ok("tenants", "delete", "errs", "--token", service.admin_token)


def test_debug_raises_and_the_script_prints_no_traceback(run: Run) -> None:
    unreachable = f"http://127.0.0.1:{free_tcp_port()}"
    plain = subprocess.run(
        [sys.executable, "-m", "api.cli", "--url", unreachable, "--token", "x", "tenants", "list"],
        capture_output=True, text=True, timeout=60, check=False)

    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1
    assert "Traceback" not in plain.stderr
    with pytest.raises(CliError) as raised:
        run("--debug", "--url", unreachable, "tenants", "list")
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


EXAMPLES = sorted(p for p in (Path(__file__).parents[2] / "topologies").glob("*.yaml")
                  if p.name != "lab.yaml")  # lab.yaml is `lab up`'s format


def test_the_example_topologies_apply_and_reapply_cleanly(run: Run, tmp_path: Path) -> None:
    assert len(EXAMPLES) >= 3
    try:
        for example in EXAMPLES:
            applied = run.ok("apply", str(example))
            assert "applied" in applied and " 0 created" not in applied, example
            assert "nothing to change" in run.ok("apply", str(example)), example
    finally:
        empty = tmp_path / "empty.yaml"
        empty.write_text("tenants: []\n")
        run.ok("apply", str(empty), "--prune")
