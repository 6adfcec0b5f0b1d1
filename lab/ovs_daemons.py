"""One OVS: an ovsdb-server and ovs-vswitchd pair started from a run directory of its own.

The one place that starts and stops OVS daemons, for the lab's simulated hosts and
for the tests' throwaway switches alike. Everything of the pair lives in `rundir`
(database, pidfiles, unixctl sockets, logs) unless told otherwise: the database
socket (`db_sock`) and the directory of the bridges' management sockets
(`mgmt_dir`, vswitchd's OVS_RUNDIR) can be put elsewhere, e.g. where libvirt's own
`ovs-vsctl` looks (/var/run/openvswitch). Both daemons run inside `netns` when
given: with the userspace datapath every vswitchd owns a tap named `ovs-netdev`,
so two of them cannot share a namespace.

A daemon is trusted by its pidfile only while that pid runs from this rundir: a
stale pidfile naming a reused pid never makes us kill a stranger.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lab.netns import (
    in_netns,
    pid_running_from,
    poll_until,
    run,
    stop_processes,
)

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
# Bounds only how long we wait for a daemon to answer; nothing asserts speed.
READY_TIMEOUT = 15.0

Daemon = Literal["ovsdb", "vswitchd"]


class OvsDaemons:
    """ovsdb-server + ovs-vswitchd (userspace datapath) on `rundir/conf.db`."""

    def __init__(
        self, rundir: Path, *, netns: str | None = None, db_sock: Path | None = None,
        mgmt_dir: Path | None = None, name: str | None = None,
    ) -> None:
        self.rundir = rundir
        self.netns = netns
        self.db_path = rundir / "conf.db"
        self.db_sock = db_sock or rundir / "db.sock"
        self.mgmt_dir = mgmt_dir or rundir
        self.name = name or str(rundir)

    @property
    def remote(self) -> str:
        """The OVSDB remote: a unix socket, reachable from any namespace."""
        return f"unix:{self.db_sock}"

    def mgmt_target(self, bridge: str) -> str:
        """The bridge's OpenFlow management socket, for ovs-ofctl."""
        return f"unix:{self.mgmt_dir / f'{bridge}.mgmt'}"

    def ctl(self, daemon: Daemon) -> Path:
        """The daemon's unixctl socket, for ovs-appctl -t."""
        return self.rundir / f"{daemon}.ctl"

    def pidfile(self, daemon: Daemon) -> Path:
        return self.rundir / f"{daemon}.pid"

    # ---- lifecycle -------------------------------------------------------------------

    def create_db(self) -> None:
        """An empty Open_vSwitch database (the rundir must exist)."""
        run(["ovsdb-tool", "create", str(self.db_path), str(OVS_SCHEMA)])

    def start(self) -> None:
        """Start whichever daemon is not running, on the existing database (idempotent).

        With --detach, vswitchd returns only once it has applied the database:
        bridges recorded there exist again when this returns.
        """
        if not self.db_path.exists():
            raise FileNotFoundError(f"{self.db_path} does not exist: create_db() first")
        self.start_ovsdb()
        run(["ovs-vsctl", f"--db={self.remote}", "--timeout=10", "--no-wait", "init"])
        if self.pid("vswitchd") is None:
            self._remove_stale(self.rundir, "vswitchd.ctl")
            self._remove_stale(self.mgmt_dir, "*.mgmt", "*.snoop")
            # OVS_RUNDIR keeps the bridges' .mgmt sockets (and the only directory
            # vswitchd accepts unix: controllers from) in mgmt_dir.
            self._run_daemon([
                "ovs-vswitchd", self.remote,
                f"--pidfile={self.pidfile('vswitchd')}",
                f"--unixctl={self.ctl('vswitchd')}",
                f"--log-file={self.rundir / 'vswitchd.log'}",
                "-vconsole:off", "--detach",
            ], env={**os.environ, "OVS_RUNDIR": str(self.mgmt_dir)})
            poll_until(lambda: self.answers("vswitchd"), timeout=READY_TIMEOUT,
                       what=f"ovs-vswitchd of {self.name}")

    def start_ovsdb(self) -> None:
        """Start ovsdb-server alone unless it runs (e.g. again after `stop_ovsdb`)."""
        if self.pid("ovsdb") is not None:
            return
        self._remove_stale(self.rundir, "ovsdb.ctl")
        self.db_sock.unlink(missing_ok=True)  # left behind by a killed server
        self._run_daemon([
            "ovsdb-server",
            f"--remote=punix:{self.db_sock}",
            # Lets `ovs-vsctl set-manager` open more remotes, as on a real host,
            # with the key, certificate and CA of `ovs-vsctl set-ssl` for pssl: ones.
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            "--private-key=db:Open_vSwitch,SSL,private_key",
            "--certificate=db:Open_vSwitch,SSL,certificate",
            "--ca-cert=db:Open_vSwitch,SSL,ca_cert",
            f"--pidfile={self.pidfile('ovsdb')}",
            f"--unixctl={self.ctl('ovsdb')}",
            f"--log-file={self.rundir / 'ovsdb.log'}",
            "-vconsole:off", "--detach", str(self.db_path),
        ])
        poll_until(lambda: self.answers("ovsdb"), timeout=READY_TIMEOUT,
                   what=f"ovsdb-server of {self.name}")

    def stop(self, *, hard: bool = False, cleanup_datapath: bool = False) -> None:
        """Stop vswitchd, then ovsdb-server; safe to repeat.

        SIGTERM, or SIGKILL when `hard` (a crash). The database keeps the
        configuration and the datapath's devices survive (OVS makes its taps
        persistent), as on a real host, unless `cleanup_datapath` asks vswitchd
        to remove them as it exits.
        """
        if cleanup_datapath and not hard and self.pid("vswitchd") is not None:
            run(["ovs-appctl", "-t", str(self.ctl("vswitchd")), "exit", "--cleanup"],
                check=False, timeout=10)
        self.stop_vswitchd(hard=hard)
        self.stop_ovsdb(hard=hard)

    def stop_vswitchd(self, *, hard: bool = False) -> None:
        self._stop("vswitchd", hard=hard)

    def stop_ovsdb(self, *, hard: bool = False) -> None:
        self._stop("ovsdb", hard=hard)

    # ---- state -----------------------------------------------------------------------

    def pid(self, daemon: Daemon) -> int | None:
        """The daemon's pid while it runs from this rundir, else None."""
        return pid_running_from(self.pidfile(daemon), self.rundir)

    @property
    def running(self) -> bool:
        return self.pid("ovsdb") is not None and self.pid("vswitchd") is not None

    def answers(self, daemon: Daemon) -> bool:
        return run(["ovs-appctl", "-t", str(self.ctl(daemon)), "version"], check=False,
                   timeout=READY_TIMEOUT).returncode == 0

    # ---- internals -------------------------------------------------------------------

    def _run_daemon(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        run(cmd if self.netns is None else in_netns(self.netns, cmd), env=env)

    def _stop(self, daemon: Daemon, *, hard: bool) -> None:
        pid = self.pid(daemon)
        if pid is not None:
            stop_processes([pid], hard=hard)

    @staticmethod
    def _remove_stale(directory: Path, *patterns: str) -> None:
        # Only called when the owning daemon is not running.
        for pattern in patterns:
            for path in directory.glob(pattern):
                path.unlink(missing_ok=True)
