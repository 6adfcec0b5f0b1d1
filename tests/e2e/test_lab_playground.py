"""The playground: `ovs-fabric lab up --detach` keeps the lab and the service running in
the background; `lab vm add` makes VMs whose ports the service binds and activates,
`lab ping` shows them talk, `lab vm rm` takes one away, `lab down` leaves no trace.

Every step is the real command in its own process, as a user types it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from api.client import FabricClient
from api.launcher import free_tcp_port
from lab.netns import list_netns

pytestmark = pytest.mark.e2e

TOPOLOGY = """
hosts:
  - {name: h1}
  - {name: h2}
tenants:
  - name: play
    networks:
      - {name: net, type: vxlan, cidr: 10.77.0.0/24}
"""


def test_detached_lab_vm_add_ping_rm_down(lab_tools: None, tmp_path: Path) -> None:
    prefix = "ofp" + secrets.token_hex(2)
    state = tmp_path / "state"
    workdir = tmp_path / "work"
    topology = tmp_path / "play.yaml"
    topology.write_text(TOPOLOGY)
    env = {**os.environ, "OVS_FABRIC_LAB_STATE_DIR": str(state), "COLUMNS": "200"}
    for name in ("OVS_FABRIC_URL", "OVS_FABRIC_TOKEN"):
        env.pop(name, None)

    def lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.cli", "lab", *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    try:
        up = lab("up", "--detach", "--topology", str(topology), "--workdir", str(workdir),
                 "--api-port", str(free_tcp_port()), "--prefix", prefix, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "lab running in the background" in up.stdout
        assert {f"{prefix}h1", f"{prefix}h2"} <= set(list_netns())

        for vm, host in (("a", "h1"), ("b", "h2")):
            added = lab("vm", "add", vm, "--host", host, "--network", "net")
            assert added.returncode == 0 and "port ACTIVE" in added.stdout, added.stdout
        pinged = lab("ping", "a", "b")
        assert pinged.returncode == 0 and "a -> b (10.77.0.2): reachable" in pinged.stdout, \
            pinged.stdout
        inside = lab("shell", "a", "--", "ip", "-br", "addr", "show", "eth0")
        assert "10.77.0.1/24" in inside.stdout, inside.stdout + inside.stderr

        status = lab("status")
        assert status.returncode == 0
        assert all(word in status.stdout for word in ("ready", "h1", "h2", "ACTIVE"))
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in lab("env").stdout.splitlines())
        with FabricClient(exports["OVS_FABRIC_URL"], exports["OVS_FABRIC_TOKEN"]) as client:
            bound = {(p["name"], p["binding"]["interface"], p["status"])
                     for p in client.list_all("ports")}
            # What `ovs-fabric status` shows per switch, as the controller reported it.
            holds = {h["name"]: (h["flow_count"], h["group_count"])
                     for h in client.list_all("hosts")}
        assert bound == {("a", "h1-a", "ACTIVE"), ("b", "h2-b", "ACTIVE")}
        assert all(flows and flows > 10 and groups is not None
                   for flows, groups in holds.values()), holds

        assert lab("vm", "rm", "b").returncode == 0
        assert f"{prefix}h2-b" not in list_netns()
        gone = lab("ping", "a", "10.77.0.2", "-c", "1")
        assert gone.returncode == 1 and "unreachable" in gone.stdout
    finally:
        down = lab("down", timeout=180)
    assert down.returncode == 0 and "lab removed" in down.stdout, down.stdout + down.stderr
    assert not [ns for ns in list_netns() if ns.startswith(prefix)]
    assert not state.exists() and not workdir.exists()
