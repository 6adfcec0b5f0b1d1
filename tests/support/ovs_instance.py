"""A throwaway switch for the tests: one OVS (lab.ovs_daemons) in a temporary run directory.

By default both daemons run in a private network namespace created for them:
with the userspace (`netdev`) datapath every vswitchd owns a tap device
literally named `ovs-netdev`, plus one tap per bridge, in its namespace. Two
vswitchds in one namespace fight over that name and the loser's bridges fail to
come up ("creating tap device failed: Device or resource busy"), so
side-by-side instances (and other engineers' OVS in the root namespace) need
separate namespaces. The database socket is a unix socket, reachable from any
namespace. Pass `isolated=False` only where one vswitchd must live in the root
namespace (libvirt's taps appear there); then no other root-namespace vswitchd
may run.

Interfaces that vswitchd should open (an uplink, a VM's veth end) must exist
in its namespace: use `instance.veth_pair()` (this kernel has no `dummy` link type).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from lab.netns import create_netns, delete_netns, in_netns, run
from lab.ovs_daemons import OvsDaemons


def unique_name(prefix: str) -> str:
    """A kernel-safe interface/bridge name (<= 15 chars) unlikely to collide."""
    return f"{prefix}{uuid.uuid4().hex[: 15 - len(prefix)]}"


class OvsInstance:
    """One simulated host's OVS. Use `running_ovs()` so it is always torn down."""

    def __init__(self, rundir: Path, netns: str | None) -> None:
        self.rundir = rundir
        self.netns = netns  # the daemons' namespace; None: the root namespace
        self.daemons = OvsDaemons(rundir, netns=netns)
        self.db_path = self.daemons.db_path
        self.db_sock = self.daemons.db_sock

    @property
    def remote(self) -> str:
        return self.daemons.remote

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self.netns is not None:
            create_netns(self.netns)
        self.daemons.create_db()
        self.daemons.start()

    def start_ovsdb(self) -> None:
        """Start ovsdb-server again on this instance's database file (after `kill_ovsdb`)."""
        self.daemons.start_ovsdb()

    def kill_ovsdb(self) -> None:
        """Kill ovsdb-server abruptly (SIGKILL), as a crash would."""
        self.daemons.stop_ovsdb(hard=True)

    def stop(self) -> None:
        """Stop both daemons, delete the namespace and run directory; safe to repeat."""
        try:
            # The datapath's taps would otherwise outlive vswitchd (OVS makes them
            # persistent), in the root namespace when not isolated.
            self.daemons.stop(cleanup_datapath=True)
        finally:
            try:
                if self.netns is not None:
                    # Deleting the namespace destroys every virtual device left in it.
                    delete_netns(self.netns)
            finally:
                shutil.rmtree(self.rundir, ignore_errors=True)

    # ---- the operator's view, independent of the code under test ------------

    def add_bridge(self, name: str, *settings: str) -> str:
        """A netdev bridge speaking OpenFlow 1.3 only, fail_mode=secure, plus `settings`
        (`column=value` of its Bridge row); returns its name."""
        self.vsctl(
            "add-br", name, "--", "set", "bridge", name,
            "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure", *settings,
        )  # fmt: skip
        return name

    def vsctl(self, *args: str) -> str:
        return run(["ovs-vsctl", f"--db={self.remote}", "--timeout=10", *args]).stdout

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        """ovs-ofctl against the bridge's management socket in our run directory."""
        return run(
            ["ovs-ofctl", "-O", "OpenFlow13", command, self.daemons.mgmt_target(bridge), *args]
        ).stdout

    def get(self, table: str, record: str, column: str) -> str:
        """One column as ovs-vsctl prints it, e.g. `secure`, `"00000000000000ab"`."""
        return self.vsctl("get", table, record, column).strip()

    def row_versions(self, table: str) -> dict[str, str]:
        """name -> _version of every row of `table`; _version changes on every write."""
        select = {"op": "select", "table": table, "where": [], "columns": ["name", "_version"]}
        transact = json.dumps(["Open_vSwitch", select])
        out = run(["ovsdb-client", "transact", self.remote, transact]).stdout
        rows = json.loads(out)[0]["rows"]
        return {row["name"]: row["_version"][1] for row in rows}

    def in_netns(self, *argv: str, env: dict[str, str] | None = None) -> str:
        return run(self._here(argv), env=env).stdout

    def _here(self, argv: Sequence[str]) -> list[str]:
        """The command run in the daemons' namespace."""
        return list(argv) if self.netns is None else in_netns(self.netns, argv)

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
        run(self._here(["ip", "link", "del", name]), check=False)


@contextlib.contextmanager
def running_ovs(*, isolated: bool = True) -> Iterator[OvsInstance]:
    rundir = Path(tempfile.mkdtemp(prefix="ovsf-"))
    instance = OvsInstance(rundir, unique_name("ovsf") if isolated else None)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
