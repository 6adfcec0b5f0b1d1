"""Read one host's switch the way an operator would, and change nothing.

The connectivity diagnosis (`controller.core.diagnosis`) needs what the switch
really holds and does: its OVSDB rows (one `ovsdb-client transact` of four
selects), its flows (`ovs-ofctl dump-flows`), what it does with a synthetic
packet (`ovs-appctl ofproto/trace`), the datapath flows it built from real
traffic (`dpctl/dump-flows`: the drops from a VM's interface show a spoofed
source), and its route to a VXLAN peer (`ovs/route/lookup`). Every command is
a read; every one is bounded by `timeout` seconds.

How the service reaches a host's ovs-vswitchd: over OVSDB it reaches any host
(unix:, tcp:, ssl: with the service's TLS files), but OpenFlow management
sockets and the unixctl socket that `ovs-appctl` needs exist only on the host's
own machine. For a host whose OVSDB remote is a local socket (`unix:DIR/db.sock`,
the lab's hosts and hosts on the service's machine) they are found in the same
run directory DIR, where the controller already puts its relay socket: the
bridge's `BRIDGE.mgmt`, and vswitchd's control socket `ovs-vswitchd.PID.ctl`
(OVS's default name, PID from `ovs-vswitchd.pid`) or `vswitchd.ctl` (as the
lab starts it). For a remote host the flows, traces and datapath flows are
reported unavailable and the diagnosis works from OVSDB and the computed flows.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from controller.core.diagnosis.observed import (
    DatapathDrop,
    DumpedFlow,
    OvsdbRows,
    TraceResult,
    ovs_flow_text,
    parse_datapath_drops,
    parse_dump_flows,
    parse_ovsdb_select,
    parse_trace,
)
from controller.tls import TlsFiles

__all__ = ["HostInspector", "InspectError", "local_rundir"]

DEFAULT_TIMEOUT: Final = 1.0

_SELECTS: Final = [
    "Open_vSwitch",
    {
        "op": "select",
        "table": "Bridge",
        "where": [],
        "columns": [
            "name",
            "fail_mode",
            "datapath_type",
            "protocols",
            "other_config",
            "controller",
            "ports",
        ],
    },
    {
        "op": "select",
        "table": "Controller",
        "where": [],
        "columns": ["_uuid", "target", "is_connected", "status"],
    },
    {"op": "select", "table": "Port", "where": [], "columns": ["_uuid", "name", "interfaces"]},
    {
        "op": "select",
        "table": "Interface",
        "where": [],
        "columns": [
            "_uuid",
            "name",
            "ofport",
            "link_state",
            "admin_state",
            "error",
            "type",
            "options",
            "ifindex",
        ],
    },
]


class InspectError(Exception):
    """A part of the host could not be read; the message says why, in one line."""


def local_rundir(ovsdb_remote: str) -> Path | None:
    """The host's run directory when its OVSDB is a local socket, else None."""
    first = ovsdb_remote.split(",")[0]
    if not first.startswith("unix:"):
        return None
    return Path(first.removeprefix("unix:")).parent


class HostInspector:
    def __init__(
        self, ovsdb_remote: str, *, tls: TlsFiles | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.ovsdb_remote = ovsdb_remote.split(",")[0]
        self.rundir = local_rundir(ovsdb_remote)
        self.tls = tls
        self.timeout = timeout

    # ---- OVSDB -----------------------------------------------------------------------------

    def ovsdb_rows(self) -> OvsdbRows:
        cmd = ["ovsdb-client", f"--timeout={max(1, round(self.timeout))}"]
        if self.tls is not None and self.ovsdb_remote.startswith("ssl:"):
            cmd += [
                f"--private-key={self.tls.private_key}",
                f"--certificate={self.tls.certificate}",
                f"--ca-cert={self.tls.ca_certificate}",
            ]
        cmd += ["transact", self.ovsdb_remote, json.dumps(_SELECTS)]
        output = self._run(cmd, f"OVSDB at {self.ovsdb_remote}")
        try:
            return parse_ovsdb_select(json.loads(output))
        except ValueError as exc:
            raise InspectError(f"OVSDB at {self.ovsdb_remote}: {exc}") from None

    # ---- the switch (local hosts only) -------------------------------------------------------

    def vswitchd_ctl(self) -> Path:
        if self.rundir is None:
            raise InspectError(
                f"ovs-vswitchd of a host reached at {self.ovsdb_remote} is not on this machine"
            )
        pidfile = self.rundir / "ovs-vswitchd.pid"
        candidates = []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(self.rundir / f"ovs-vswitchd.{int(pidfile.read_text())}.ctl")
        candidates.append(self.rundir / "vswitchd.ctl")
        for path in candidates:
            if path.exists():
                return path
        raise InspectError(f"no ovs-vswitchd control socket in {self.rundir}")

    def _appctl(self, *args: str) -> str:
        ctl = self.vswitchd_ctl()
        return self._run(
            ["ovs-appctl", f"--timeout={max(1, round(self.timeout))}", "-t", str(ctl), *args],
            "ovs-vswitchd",
        )

    def flows(self, bridge: str) -> tuple[DumpedFlow, ...]:
        if self.rundir is None:
            raise InspectError(
                f"the flows of a host reached at {self.ovsdb_remote} are not "
                "readable from this machine"
            )
        mgmt = self.rundir / f"{bridge}.mgmt"
        output = self._run(
            [
                "ovs-ofctl",
                "-O",
                "OpenFlow13",
                f"--timeout={max(1, round(self.timeout))}",
                "dump-flows",
                f"unix:{mgmt}",
            ],
            f"the flows of {bridge}",
        )
        return parse_dump_flows(output)

    def trace(self, bridge: str, packet: Mapping[str, int]) -> TraceResult:
        return parse_trace(self._appctl("ofproto/trace", bridge, ovs_flow_text(packet)), bridge)

    def datapath_drops(self) -> tuple[DatapathDrop, ...]:
        return parse_datapath_drops(self._appctl("dpctl/dump-flows", "-m"))

    def route_problem(self, address: str) -> str | None:
        """None when OVS has a route to `address` (the tunnel's underlay), else why not."""
        try:
            self._appctl("ovs/route/lookup", address)
        except InspectError as exc:
            return str(exc)
        return None

    # ---- running the tools --------------------------------------------------------------------

    def _run(self, cmd: Sequence[str], what: str) -> str:
        try:
            done = subprocess.run(
                list(cmd), capture_output=True, text=True, timeout=self.timeout + 1, check=False
            )
        except subprocess.TimeoutExpired:
            raise InspectError(f"{what} did not answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise InspectError(f"{what}: {exc}") from None
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise InspectError(f"{what}: {message[-1] if message else f'exit {done.returncode}'}")
        return done.stdout
