"""A throwaway ovsdb-server + ovs-vswitchd pair in a temporary run directory.

ovsdb-server runs in the root network namespace with its own database and
unix socket (reachable from anywhere). ovs-vswitchd by default runs in a
private network namespace created for it: with the userspace (`netdev`)
datapath every vswitchd owns a tap device literally named `ovs-netdev`, plus
one tap per bridge, in its namespace. Two vswitchds in one namespace fight
over that name and the loser's bridges fail to come up ("creating tap device
failed: Device or resource busy"), so side-by-side instances (and other
engineers' OVS in the root namespace) need separate namespaces. Pass
`isolated=False` only where one vswitchd must live in the root namespace
(libvirt's taps appear there); then no other root-namespace vswitchd may run.

Interfaces that vswitchd should open (an uplink, a VM's veth end) must exist
in its namespace: use `instance.veth_pair()` (this kernel has no `dummy` link type).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
# Bounds only how long we wait for a daemon to appear or vanish; no test asserts speed.
_DAEMON_WAIT_S = 15.0


def unique_name(prefix: str) -> str:
    """A kernel-safe interface/bridge name (<= 15 chars) unlikely to collide."""
    return f"{prefix}{uuid.uuid4().hex[: 15 - len(prefix)]}"


class OvsInstance:
    """One simulated host's OVS. Use `running_ovs()` so it is always torn down."""

    def __init__(self, rundir: Path, netns: str | None) -> None:
        self.rundir = rundir
        self.netns = netns  # vswitchd's namespace; None: the root namespace
        self.db_path = rundir / "conf.db"
        self.db_sock = rundir / "db.sock"
        self._ovsdb_pidfile = rundir / "ovsdb.pid"
        self._vswitchd_pidfile = rundir / "vswitchd.pid"

    @property
    def remote(self) -> str:
        return f"unix:{self.db_sock}"

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self.netns is not None:
            _run(["ip", "netns", "add", self.netns])
            self.in_netns("ip", "link", "set", "lo", "up")
        _run(["ovsdb-tool", "create", str(self.db_path), str(VSWITCH_SCHEMA)])
        self.start_ovsdb()
        self.vsctl("--no-wait", "init")
        self.in_netns(
            "ovs-vswitchd",
            self.remote,
            f"--pidfile={self._vswitchd_pidfile}",
            f"--unixctl={self.rundir / 'vswitchd.ctl'}",
            f"--log-file={self.rundir / 'vswitchd.log'}",
            "--detach",
            env={**os.environ, "OVS_RUNDIR": str(self.rundir)},
        )

    def start_ovsdb(self) -> None:
        """Start (or restart) ovsdb-server on this instance's database file."""
        _run(
            [
                "ovsdb-server",
                f"--remote=punix:{self.db_sock}",
                f"--pidfile={self._ovsdb_pidfile}",
                f"--unixctl={self.rundir / 'ovsdb.ctl'}",
                f"--log-file={self.rundir / 'ovsdb.log'}",
                "--detach",
                str(self.db_path),
            ]
        )
        _wait_for(self.db_sock.exists, "ovsdb-server socket")

    def kill_ovsdb(self) -> None:
        """Kill ovsdb-server abruptly (SIGKILL), as a crash would."""
        _kill_from_pidfile(self._ovsdb_pidfile, signal.SIGKILL)
        # A killed server leaves its socket behind; remove it so a restart can bind.
        self.db_sock.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop both daemons, delete the namespace and run directory; safe to repeat."""
        try:
            vswitchd = _pid_from(self._vswitchd_pidfile)
            # --cleanup removes the datapath and its tap devices, which would
            # otherwise outlive vswitchd (OVS makes them persistent).
            subprocess.run(
                ["ovs-appctl", "-t", str(self.rundir / "vswitchd.ctl"), "exit", "--cleanup"],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if vswitchd is not None:
                _terminate(vswitchd, signal.SIGTERM)
            ovsdb = _pid_from(self._ovsdb_pidfile)
            if ovsdb is not None:
                _terminate(ovsdb, signal.SIGTERM)
        finally:
            try:
                if self.netns is not None:
                    # Deleting the namespace destroys every virtual device left in it.
                    subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            finally:
                shutil.rmtree(self.rundir, ignore_errors=True)

    # ---- the operator's view, independent of the code under test ------------

    def vsctl(self, *args: str) -> str:
        return _run(["ovs-vsctl", f"--db={self.remote}", "--timeout=10", *args])

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        """ovs-ofctl against the bridge's management socket in our run directory."""
        target = f"unix:{self.rundir / (bridge + '.mgmt')}"
        return _run(["ovs-ofctl", "-O", "OpenFlow13", command, target, *args])

    def get(self, table: str, record: str, column: str) -> str:
        """One column as ovs-vsctl prints it, e.g. `secure`, `"00000000000000ab"`."""
        return self.vsctl("get", table, record, column).strip()

    def row_versions(self, table: str) -> dict[str, str]:
        """name -> _version of every row of `table`; _version changes on every write."""
        select = {"op": "select", "table": table, "where": [], "columns": ["name", "_version"]}
        out = _run(["ovsdb-client", "transact", self.remote, json.dumps(["Open_vSwitch", select])])
        rows = json.loads(out)[0]["rows"]
        return {row["name"]: row["_version"][1] for row in rows}

    def in_netns(self, *argv: str, env: dict[str, str] | None = None) -> str:
        prefix = [] if self.netns is None else ["ip", "netns", "exec", self.netns]
        return _run([*prefix, *argv], env=env)

    # ---- kernel interfaces for vswitchd to open ------------------------------

    @contextlib.contextmanager
    def veth_pair(self) -> Iterator[tuple[str, str]]:
        """A veth pair (both ends up) in vswitchd's namespace, deleted afterwards."""
        left, right = unique_name("vea"), unique_name("veb")
        self.in_netns("ip", "link", "add", left, "type", "veth", "peer", "name", right)
        try:
            self.in_netns("ip", "link", "set", left, "up")
            self.in_netns("ip", "link", "set", right, "up")
            yield left, right
        finally:
            self._delete_link(left)  # takes its peer with it

    def _delete_link(self, name: str) -> None:
        prefix = [] if self.netns is None else ["ip", "netns", "exec", self.netns]
        subprocess.run([*prefix, "ip", "link", "del", name], check=False, capture_output=True)


@contextlib.contextmanager
def running_ovs(*, isolated: bool = True) -> Iterator[OvsInstance]:
    rundir = Path(tempfile.mkdtemp(prefix="ovsf-"))
    instance = OvsInstance(rundir, unique_name("ovsf") if isolated else None)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _kill_from_pidfile(pidfile: Path, sig: signal.Signals) -> None:
    pid = _pid_from(pidfile)
    if pid is not None:
        _terminate(pid, sig)
    pidfile.unlink(missing_ok=True)


def _pid_from(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _terminate(pid: int, sig: signal.Signals) -> None:
    """Send `sig` unless the process is already gone; escalate to SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        if _alive(pid):
            os.kill(pid, sig)
        try:
            _wait_for(lambda: not _alive(pid), f"process {pid} to exit")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            _wait_for(lambda: not _alive(pid), f"process {pid} to die")


def _alive(pid: int) -> bool:
    # A detached daemon is reparented and reaped elsewhere; until then it is a
    # zombie, which still answers kill(pid, 0), so look at its state instead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _DAEMON_WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
