"""A real local host for the libvirt tests: OVS where libvirt expects it, libvirtd, throwaway VMs.

libvirt runs in the root network namespace and its own `ovs-vsctl` (for
`<virtualport type='openvswitch'>`) talks to /var/run/openvswitch/db.sock, so
`LocalOvs` runs ovsdb-server and ovs-vswitchd in the root namespace with that
default run directory (the database itself lives in a temporary directory).
It refuses to start when an OVS already runs there rather than take it over.

`LibvirtDaemons` starts virtlogd and libvirtd when they are not running and
stops only what it started. `Domains` defines `<domain type='qemu'>` VMs (TCG,
64 MiB, one vCPU, no disk: the NICs exist as long as QEMU runs) with names
unique to the test run, and destroys and undefines them all at the end.

Everything here works through the operators' tools (ovs-vsctl, ovs-ofctl,
virsh), independent of the code under test. `libvirt_service` starts the real service
watching it. Also used by bench/libvirt_bench.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from api.client import FabricClient
from api.launcher import ServiceProcess
from lab.netns import poll_until, process_alive, read_pidfile, stop_processes
from lab.netns import run as netns_run
from lab.ovs_daemons import OvsDaemons
from tests.support.eventually import eventually

OVS_RUNDIR = Path("/var/run/openvswitch")
OVS_DB_SOCK = OVS_RUNDIR / "db.sock"
OVSDB_REMOTE = f"unix:{OVS_DB_SOCK}"
LIBVIRT_URI = "qemu:///system"
FABRIC_XMLNS = "https://ovs-fabric.dev/xmlns/1"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")  # libvirt keeps one log per domain name
# Bounds how long we wait for a daemon or VM to appear or vanish; never a speed assertion.
DAEMON_WAIT_S = 30.0


class EnvironmentRefused(RuntimeError):
    """The machine is not in a state these tests may take over."""


def run(argv: list[str], *, timeout: float = 60) -> str:
    return netns_run(argv, timeout=timeout).stdout


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DAEMON_WAIT_S) -> None:
    poll_until(condition, timeout=timeout, what=what)


def run_token() -> str:
    return uuid.uuid4().hex[:6]


# ---- OVS in the default run directory ----------------------------------------------------


class LocalOvs:
    """ovsdb-server + ovs-vswitchd on /var/run/openvswitch, database in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # No OVS_RUNDIR of its own: bridges' management sockets go to /var/run/openvswitch.
        self.daemons = OvsDaemons(workdir, db_sock=OVS_DB_SOCK, mgmt_dir=OVS_RUNDIR)
        self._created_rundir = False
        self._started = False

    def start(self) -> None:
        self._refuse_if_running()
        if not OVS_RUNDIR.exists():
            OVS_RUNDIR.mkdir(parents=True)
            self._created_rundir = True
        self._started = True
        self.daemons.create_db()
        self.daemons.start()

    def _refuse_if_running(self) -> None:
        if OVS_DB_SOCK.exists():
            if _answers(OVS_DB_SOCK):
                raise EnvironmentRefused(
                    f"an OVS already runs on {OVS_DB_SOCK}; the libvirt tests need that run "
                    "directory for their own OVS: stop it first "
                    "(`/usr/share/openvswitch/scripts/ovs-ctl stop` or "
                    "`systemctl stop openvswitch-switch`)"
                )
            OVS_DB_SOCK.unlink()  # left behind by a killed server
        for pidfile in OVS_RUNDIR.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                if process_alive(int(pidfile.read_text().strip())):
                    raise EnvironmentRefused(
                        f"{pidfile} names a running process; stop that OVS first"
                    )

    def stop(self) -> None:
        """Stop both daemons and remove what they left in the run directory; safe twice."""
        if not self._started:
            return
        self._started = False
        try:
            self.daemons.stop()
        finally:
            for leftover in (OVS_DB_SOCK, *OVS_RUNDIR.glob("*.mgmt"), *OVS_RUNDIR.glob("*.snoop")):
                leftover.unlink(missing_ok=True)
            (OVS_RUNDIR / "ovs-fabric-ofp.sock").unlink(missing_ok=True)
            if self._created_rundir:
                with contextlib.suppress(OSError):
                    OVS_RUNDIR.rmdir()

    # ---- the operator's view -----------------------------------------------------------

    def vsctl(self, *args: str) -> str:
        return run(["ovs-vsctl", f"--db={OVSDB_REMOTE}", "--timeout=10", *args])

    def dump_flows(self, bridge: str) -> list[str]:
        out = run(
            [
                "ovs-ofctl",
                "-O",
                "OpenFlow13",
                "--no-names",
                "dump-flows",
                f"unix:{OVS_RUNDIR / (bridge + '.mgmt')}",
            ]
        )
        return [line.strip() for line in out.splitlines() if "actions=" in line]

    def bridge_exists(self, bridge: str) -> bool:
        return (
            subprocess.run(
                ["ovs-vsctl", f"--db={OVSDB_REMOTE}", "--timeout=10", "br-exists", bridge],
                capture_output=True,
            ).returncode
            == 0
        )

    def ports(self, bridge: str) -> list[str]:
        if not self.bridge_exists(bridge):
            return []
        return self.vsctl("list-ports", bridge).split()

    def external_ids(self, interface: str) -> dict[str, str]:
        out = self.vsctl(
            "--format=json", "--columns=external_ids", "find", "Interface", f"name={interface}"
        )
        rows = json.loads(out)["data"]
        if not rows:
            return {}
        _kind, pairs = rows[0][0]
        return {key: value for key, value in pairs}

    def ofport(self, interface: str) -> int:
        value = self.vsctl("get", "Interface", interface, "ofport").strip()
        return int(value) if value.lstrip("-").isdigit() else -1

    def delete_bridge(self, bridge: str) -> None:
        self.vsctl("--if-exists", "del-br", bridge)


def flows_on_port(flows: list[str], ofport: int) -> list[str]:
    """Flows matching packets from `ofport` or sending packets to it."""
    return [
        f
        for f in flows
        if f"in_port={ofport}," in f + ","
        or f"output:{ofport}," in f + ","
        or f"output:{ofport} " in f
    ]


# ---- libvirt daemons ---------------------------------------------------------------------


class LibvirtDaemons:
    """virtlogd and libvirtd: started when absent, stopped at the end only if started here."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._virtlogd_pidfile = workdir / "virtlogd.pid"
        self._libvirtd_pidfile = workdir / "libvirtd.pid"
        self.owns_virtlogd = False
        self.owns_libvirtd = False

    def start(self) -> None:
        if not _process_running("virtlogd"):
            run(["virtlogd", "-d", "-p", str(self._virtlogd_pidfile)])
            self.owns_virtlogd = True
            wait_for(lambda: read_pidfile(self._virtlogd_pidfile) is not None, "virtlogd")
        if not _process_running("libvirtd"):
            self.owns_libvirtd = True
            self.start_libvirtd()
        wait_for(self.answers, "libvirtd to answer on qemu:///system")

    def start_libvirtd(self) -> None:
        if not self.owns_libvirtd:
            raise EnvironmentRefused("libvirtd was not started by these tests; not touching it")
        conf = self.workdir / "qemu.conf"
        # /dev/kvm is root-only here: libvirt probes QEMU as root (KVM found) but checks
        # /dev/kvm as the qemu user (KVM unusable), so its capability cache never
        # validates and every domain start re-probes QEMU (~45 s). QEMU running as
        # root (TCG regardless: type='qemu') keeps the cache valid. The override is
        # bind-mounted in libvirtd's own mount namespace: the machine is not changed.
        original = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
        conf.write_text(original + '\nuser = "root"\ngroup = "root"\n')
        self._libvirtd_pidfile.unlink(missing_ok=True)
        run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'mount --bind "{conf}" {QEMU_CONF} '
                f'&& exec libvirtd -d -p "{self._libvirtd_pidfile}"',
            ]
        )
        wait_for(lambda: read_pidfile(self._libvirtd_pidfile) is not None, "libvirtd pid file")
        wait_for(self.answers, "libvirtd to answer")

    def stop_libvirtd(self) -> None:
        if not self.owns_libvirtd:
            raise EnvironmentRefused("libvirtd was not started by these tests; not touching it")
        _kill_from_pidfile(self._libvirtd_pidfile)

    def restart_libvirtd(self) -> None:
        self.stop_libvirtd()
        self.start_libvirtd()

    def answers(self) -> bool:
        return (
            subprocess.run(
                ["virsh", "-c", LIBVIRT_URI, "version"], capture_output=True, timeout=30
            ).returncode
            == 0
        )

    def stop(self) -> None:
        if self.owns_libvirtd:
            _kill_from_pidfile(self._libvirtd_pidfile)
            self.owns_libvirtd = False
        if self.owns_virtlogd:
            _kill_from_pidfile(self._virtlogd_pidfile)
            self.owns_virtlogd = False


# ---- domains -----------------------------------------------------------------------------


def ovs_nic(bridge: str, mac: str, interface_id: str | None = None) -> str:
    """A NIC libvirt itself plugs into an OVS bridge (`virtualport type='openvswitch'`)."""
    parameters = f"<parameters interfaceid={quoteattr(interface_id)}/>" if interface_id else ""
    return (
        "<interface type='bridge'>"
        f"<mac address={quoteattr(mac)}/><source bridge={quoteattr(bridge)}/>"
        f"<virtualport type='openvswitch'>{parameters}</virtualport>"
        "<model type='virtio'/></interface>"
    )


def tap_nic(tap: str, mac: str) -> str:
    """A NIC whose tap libvirt creates and attaches nowhere (type='ethernet')."""
    return (
        "<interface type='ethernet'>"
        f"<mac address={quoteattr(mac)}/><target dev={quoteattr(tap)} managed='yes'/>"
        "<model type='virtio'/></interface>"
    )


def network_metadata(
    network_id: str | None = None, *, name: str | None = None, tenant: str | None = None
) -> str:
    """Domain metadata naming the network a port is created on (by id, or name [+ tenant])."""
    attributes = {"id": network_id, "name": name, "tenant": tenant}
    given = "".join(f" {key}={quoteattr(value)}" for key, value in attributes.items() if value)
    return f"<fabric:network xmlns:fabric={quoteattr(FABRIC_XMLNS)}{given}/>"


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))


@dataclass
class Domain:
    name: str
    uuid: str

    def virsh(self, *args: str) -> str:
        return run(["virsh", "-c", LIBVIRT_URI, *args])

    def start(self) -> None:
        self.virsh("start", self.name)

    def destroy(self) -> None:
        self.virsh("destroy", self.name)

    def is_running(self) -> bool:
        return self.virsh("domstate", self.name).strip() == "running"

    def qemu_pid(self) -> int:
        pid = read_pidfile(Path("/run/libvirt/qemu") / f"{self.name}.pid")
        if pid is None:
            raise RuntimeError(f"{self.name} has no QEMU process")
        return pid

    def taps(self) -> dict[str, str]:
        """{mac: tap device} of the running domain."""
        lines = self.virsh("domiflist", self.name).splitlines()[2:]
        taps = {}
        for line in lines:
            parts = line.split()
            if len(parts) == 5:
                taps[parts[4].lower()] = parts[0]
        return taps

    def attach(self, nic_xml: str) -> None:
        path = Path(tempfile.mkstemp(prefix="ovsf-nic-", suffix=".xml")[1])
        try:
            path.write_text(nic_xml)
            self.virsh("attach-device", self.name, str(path), "--live")
        finally:
            path.unlink(missing_ok=True)


@dataclass
class Domains:
    """Defines VMs named `<prefix>-<n>`; `cleanup` destroys and undefines every one of them."""

    prefix: str = field(default_factory=lambda: f"ovsf-{run_token()}")
    defined: list[Domain] = field(default_factory=list)

    def define(self, nics: list[str], *, metadata: str = "", start: bool = True) -> Domain:
        name = f"{self.prefix}-{len(self.defined)}"
        xml = (
            "<domain type='qemu'>"
            f"<name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            # ACPI lets QEMU hot-plug PCI NICs.
            "<features><acpi/></features>"
            f"<metadata>{metadata}</metadata>"
            f"<devices>{''.join(nics)}</devices></domain>"
        )
        path = Path(tempfile.mkstemp(prefix="ovsf-domain-", suffix=".xml")[1])
        try:
            path.write_text(xml)
            run(["virsh", "-c", LIBVIRT_URI, "define", str(path)])
        finally:
            path.unlink(missing_ok=True)
        domain = Domain(name=name, uuid=run(["virsh", "-c", LIBVIRT_URI, "domuuid", name]).strip())
        self.defined.append(domain)
        if start:
            domain.start()
        return domain

    def cleanup(self) -> None:
        for domain in self.defined:
            subprocess.run(
                ["virsh", "-c", LIBVIRT_URI, "destroy", domain.name], capture_output=True
            )
            subprocess.run(
                ["virsh", "-c", LIBVIRT_URI, "undefine", domain.name], capture_output=True
            )
            (QEMU_LOG_DIR / f"{domain.name}.log").unlink(missing_ok=True)
        self.defined.clear()


@contextlib.contextmanager
def local_host() -> Iterator[tuple[LocalOvs, LibvirtDaemons]]:
    """OVS on /var/run/openvswitch plus libvirtd; everything started here is stopped after."""
    workdir = Path(tempfile.mkdtemp(prefix="ovsf-libvirt-"))
    ovs = LocalOvs(workdir)
    daemons = LibvirtDaemons(workdir)
    try:
        ovs.start()
        daemons.start()
        yield ovs, daemons
    finally:
        try:
            daemons.stop()
        finally:
            ovs.stop()
            shutil.rmtree(workdir, ignore_errors=True)


# ---- the service watching this host's libvirt ---------------------------------------------


@dataclass
class LibvirtService:
    """The real service with its libvirt watcher, managing this host's bridge `bridge`."""

    service: ServiceProcess
    client: FabricClient
    bridge: str
    host_id: str
    network_id: str

    def watched_host(self, state: str | None = None) -> dict[str, Any] | None:
        """This host as the service's libvirt watcher reports it (None: not watched yet)."""
        params = {"host_id": self.host_id} | ({"state": state} if state else {})
        found = self.client.request("GET", "/vm-interfaces", params=params)
        assert found["watching"] is True
        hosts: list[dict[str, Any]] = found["hosts"]
        return hosts[0] if hosts else None

    def watching(self) -> bool:
        host = self.watched_host()
        return host is not None and bool(host["connected"])


@contextlib.contextmanager
def libvirt_service(
    ovs: LocalOvs,
    workdir: Path,
    *,
    tenant: str,
    cidr: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LibvirtService]:
    """The service started on `workdir`, this host registered with its libvirt URI, one
    VLAN network `cidr` of tenant `tenant`; returns once the service manages the bridge
    and watches libvirt. The service is stopped and the bridge deleted afterwards."""
    bridge = f"lvb{run_token()}"
    service = ServiceProcess(
        workdir / "service",
        datapath_type="netdev",
        extra_env={
            "OVS_FABRIC_LIBVIRT_ENABLED": "true",
            # A bridge name of our own: netdev bridges show up as root-namespace devices.
            "OVS_FABRIC_INTEGRATION_BRIDGE": bridge,
            **(extra_env or {}),
        },
    )
    try:
        service.start()
        with FabricClient(service.base_url, service.admin_token) as client:
            host = client.create(
                "hosts", name="local", ovsdb_remote=OVSDB_REMOTE, libvirt_uri=LIBVIRT_URI
            )
            owner = client.create("tenants", name=tenant)
            network = client.create(
                "networks", tenant_id=owner["id"], name="n", type="vlan", cidr=cidr
            )
            # libvirt plugs virtualport NICs into the bridge itself: it must exist first.
            eventually(
                lambda: client.get("hosts", host["id"])["openflow_connected"],
                f"the service managing {bridge}\n{service.log_tail()}",
                timeout=DAEMON_WAIT_S,
            )
            eventually(lambda: ovs.bridge_exists(bridge), f"bridge {bridge}", timeout=DAEMON_WAIT_S)
            found = LibvirtService(
                service=service,
                client=client,
                bridge=bridge,
                host_id=host["id"],
                network_id=network["id"],
            )
            eventually(
                found.watching,
                f"the service watching libvirt\n{service.log_tail()}",
                timeout=DAEMON_WAIT_S,
            )
            yield found
    finally:
        try:
            service.stop()
        finally:
            ovs.delete_bridge(bridge)


# ---- processes -----------------------------------------------------------------------------


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(os.fspath(path))
        except OSError:
            return False
    return True


def _process_running(name: str) -> bool:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    # A daemon that just exited may linger as a zombie until init reaps it.
    return any(process_alive(int(pid)) for pid in found.split())


def _kill_from_pidfile(pidfile: Path) -> None:
    pid = read_pidfile(pidfile)
    if pid is not None:
        stop_processes([pid], grace=15)
    pidfile.unlink(missing_ok=True)
