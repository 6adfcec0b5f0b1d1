"""A simulated multi-host lab on one machine: hosts and VMs as network namespaces.

Each simulated host is a namespace running its own ovsdb-server and ovs-vswitchd
(userspace datapath) from a private run directory. A "fabric" namespace joins
the hosts with two Linux bridges: `ul`, the underlay that carries VXLAN between
the hosts' `br-phy` addresses, and `tr`, a trunk that carries 802.1Q frames
between the hosts' `trunk0` uplinks. A simulated VM is a namespace whose `eth0`
is one end of a veth pair; the other end waits, unattached, in the host
namespace for the controller to plug into br-int.

Every interface lives inside a namespace the lab created, never in the root
namespace, so interface names only have to be unique per namespace and several
labs (concurrent test runs) can coexist: only namespace names carry the lab's
prefix. Each lab claims its prefix in a registry under /run and records there
the namespaces it creates *before* creating them, so that `cleanup_stale` can
dismantle the leftovers of a lab whose owning process died.

A Lab is not thread-safe: one owner drives it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import TracebackType
from typing import Literal

from lab.netns import (
    Capture,
    CaptureDirection,
    CommandError,
    create_netns,
    delete_netns,
    in_netns,
    list_netns,
    netns_exists,
    pid_running_from,
    process_start_ticks,
    run,
    send_raw_frame,
    stop_processes,
    wait_link_up,
)
from lab.ovs_daemons import OVS_SCHEMA, OvsDaemons

log = logging.getLogger(__name__)

LAB_REGISTRY = Path("/run/ovs-fabric/labs")
WORKDIR_STEM = "ovs-fabric-lab-"
# RFC 2544 benchmarking range: never routed, never someone else's address.
UNDERLAY_NETWORK = ipaddress.IPv4Network("198.18.0.0/24")
UNDERLAY_BRIDGE = "ul"
TRUNK_BRIDGE = "tr"
MANAGEMENT_BRIDGE = "mg"
HOST_UNDERLAY_IF = "ul0"
HOST_UPLINK_IF = "trunk0"
HOST_MANAGEMENT_IF = "mg0"
# Management networks are /24s of 198.18.0.0/15 (RFC 2544) other than the underlay's:
# one per lab, since the root namespace holds an address on it.
MANAGEMENT_SUPERNET = ipaddress.IPv4Network("198.18.0.0/15")
VM_IF = "eth0"
IFNAMSIZ = 15

REQUIRED_TOOLS = (
    "ip", "sysctl", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
    "ovs-ofctl", "ovs-appctl", "tcpdump", "ethtool", "ping",
)

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,11}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_BRIDGE_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_PING_SUMMARY_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


class LabError(RuntimeError):
    """The lab could not be built, used or torn down as asked."""


def require_lab_tools() -> None:
    """Fail with one clear message if this machine cannot run a lab."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, veths, OVS daemons)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing executables: {', '.join(missing)}")
    elif run(["ip", "netns", "list"], check=False).returncode != 0:
        problems.append("`ip netns` does not work (iproute2 without netns support?)")
    if not OVS_SCHEMA.is_file():
        problems.append(f"missing OVS schema {OVS_SCHEMA} (package openvswitch-switch)")
    if problems:
        raise LabError(
            "cannot build a simulated lab: " + "; ".join(problems)
            + ". On Debian: apt-get install openvswitch-switch iproute2 procps ethtool"
            " tcpdump iputils-ping (.ci/fabric does this)."
        )


# ---- ownership records ----------------------------------------------------------------


@dataclass
class _LabRecord:
    """Who owns a lab and what it created; lives in the registry while the lab exists."""

    prefix: str
    owner_pid: int
    owner_start_ticks: int
    workdir: str
    namespaces: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return LAB_REGISTRY / f"{self.prefix}.json"

    def owner_alive(self) -> bool:
        return process_start_ticks(self.owner_pid) == self.owner_start_ticks

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> _LabRecord:
        data = json.loads(text)
        return cls(
            prefix=str(data["prefix"]),
            owner_pid=int(data["owner_pid"]),
            owner_start_ticks=int(data["owner_start_ticks"]),
            workdir=str(data["workdir"]),
            namespaces=[str(ns) for ns in data.get("namespaces", [])],
        )

    def claim(self) -> bool:
        """Create the registry entry; False if this prefix is already registered."""
        LAB_REGISTRY.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(self.to_json())
        return True

    def save(self) -> None:
        # Write-then-rename so a crash never leaves a half-written record behind.
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(self.to_json())
        temporary.replace(self.path)


def _load_record(path: Path) -> _LabRecord | None:
    try:
        return _LabRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        log.warning("ignoring unreadable lab record %s: %s", path, exc)
        return None


def _random_prefix() -> str:
    return "of" + secrets.token_hex(2)


def _own_start_ticks() -> int:
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None  # we are alive by definition
    return ticks


def _daemons_of(workdir: Path) -> list[int]:
    """Live processes named by pidfiles under workdir that really run from it."""
    if not workdir.is_dir():
        return []
    pids = [pid_running_from(pidfile, workdir) for pidfile in workdir.rglob("*.pid")]
    return [pid for pid in pids if pid is not None]


def _dismantle(record: _LabRecord) -> list[str]:
    """Remove everything a lab created; returns what could not be removed."""
    errors: list[str] = []
    workdir = Path(record.workdir)
    try:
        stop_processes(_daemons_of(workdir))
    except (OSError, TimeoutError) as exc:
        errors.append(f"daemons under {workdir}: {exc}")
    for netns in reversed(record.namespaces):
        try:
            delete_netns(netns)
        except (CommandError, OSError, TimeoutError) as exc:
            errors.append(f"namespace {netns}: {exc}")
    # Checked, not assumed: the record is the only trace left once it is gone.
    existing = set(list_netns())
    leftovers = [netns for netns in record.namespaces if netns in existing]
    if leftovers:
        errors.append(f"namespaces still present: {leftovers}")
    try:
        if workdir.is_absolute() and workdir != Path("/"):
            shutil.rmtree(workdir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        errors.append(f"workdir {workdir}: {exc}")
    if not errors:
        record.path.unlink(missing_ok=True)
    return errors


def cleanup_stale(prefix_pattern: str = "*") -> list[str]:
    """Dismantle labs matching the glob whose owning process is dead.

    Labs whose owner still runs (another test session, a running `lab`
    command) are never touched. Returns the prefixes that were cleaned.
    """
    cleaned: list[str] = []
    errors: list[str] = []
    if LAB_REGISTRY.is_dir():
        for path in sorted(LAB_REGISTRY.glob("*.json")):
            record = _load_record(path)
            if record is None or not fnmatchcase(record.prefix, prefix_pattern):
                continue
            if record.owner_alive():
                continue
            log.info("removing stale lab %s (owner pid %d is gone)", record.prefix,
                     record.owner_pid)
            problems = _dismantle(record)
            errors.extend(problems)
            if not problems:
                cleaned.append(record.prefix)
    # A workdir can outlive its registry entry (/run is emptied by a reboot, /tmp may
    # not be); its own copy of the record says whether its owner is gone.
    for lab_json in Path(tempfile.gettempdir()).glob(f"{WORKDIR_STEM}*/lab.json"):
        record = _load_record(lab_json)
        if record is None or not fnmatchcase(record.prefix, prefix_pattern):
            continue
        if record.owner_alive() or record.path.exists():
            continue
        shutil.rmtree(lab_json.parent, ignore_errors=True)
    if errors:
        raise LabError("stale labs could not be fully removed: " + "; ".join(errors))
    return cleaned


# ---- names and addresses ----------------------------------------------------------------


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be 1-12 lowercase letters/digits starting with a letter"
        )


def _check_ifname(name: str) -> None:
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")


def _check_mac(mac: str) -> str:
    mac = mac.lower()
    if not _MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {mac!r}")
    return mac


def _parse_interface(address: str, default_prefix_len: int) -> ipaddress.IPv4Interface:
    text = address if "/" in address else f"{address}/{default_prefix_len}"
    parsed = ipaddress.ip_interface(text)
    if not isinstance(parsed, ipaddress.IPv4Interface):
        raise ValueError(f"only IPv4 addresses are supported in the lab: {address!r}")
    return parsed


# ---- frames for raw injection ------------------------------------------------------------


def mac_to_bytes(mac: str) -> bytes:
    return bytes.fromhex(_check_mac(mac).replace(":", ""))


def build_ethernet_frame(
    *, dst: str, src: str, ethertype: int, payload: bytes = b"",
    vlan: int | None = None, pcp: int = 0,
) -> bytes:
    """An Ethernet II frame, 802.1Q-tagged when `vlan` is given, padded to 60 bytes."""
    header = mac_to_bytes(dst) + mac_to_bytes(src)
    if vlan is not None:
        if not 0 <= vlan <= 4095 or not 0 <= pcp <= 7:
            raise ValueError(f"bad VLAN tag vid={vlan} pcp={pcp}")
        header += struct.pack("!HH", 0x8100, (pcp << 13) | vlan)
    frame = header + struct.pack("!H", ethertype) + payload
    return frame.ljust(60 + (4 if vlan is not None else 0), b"\0")


def build_arp_frame(
    *, op: Literal["request", "reply"], sender_mac: str, sender_ip: str,
    target_ip: str, target_mac: str = "00:00:00:00:00:00",
    src: str | None = None, dst: str | None = None, vlan: int | None = None,
) -> bytes:
    """An ARP frame; `src`/`dst` override the Ethernet addresses (to spoof them apart)."""
    opcode = 1 if op == "request" else 2
    payload = (
        struct.pack("!HHBBH", 1, 0x0800, 6, 4, opcode)
        + mac_to_bytes(sender_mac) + ipaddress.IPv4Address(sender_ip).packed
        + mac_to_bytes(target_mac) + ipaddress.IPv4Address(target_ip).packed
    )
    if dst is None:
        dst = "ff:ff:ff:ff:ff:ff" if op == "request" else target_mac
    return build_ethernet_frame(
        dst=dst, src=src or sender_mac, ethertype=0x0806, payload=payload, vlan=vlan
    )


# ---- the lab -----------------------------------------------------------------------------


class Lab:
    """Simulated hosts on one machine; a context manager that leaves nothing behind."""

    def __init__(self, prefix: str | None = None, workdir: Path | None = None) -> None:
        if prefix is not None and not _PREFIX_RE.match(prefix):
            raise ValueError(
                f"lab prefix {prefix!r} must be 2-12 lowercase letters/digits"
                " starting with a letter"
            )
        require_lab_tools()
        self.hosts: dict[str, SimHost] = {}
        self._captures: list[Capture] = []
        self._handed_out_tunnel_ips: set[str] = set()
        self.management: ipaddress.IPv4Interface | None = None
        self._closed = False
        fixed_prefix = prefix is not None
        prefix = prefix or _random_prefix()
        self.workdir = self._prepare_workdir(workdir, prefix)
        try:
            self._record = self._claim(prefix, fixed=fixed_prefix)
            self.prefix = self._record.prefix
            (self.workdir / "lab.json").write_text(self._record.to_json())
            self.fabric_netns = f"{self.prefix}fab"
            self._create_fabric()
        except BaseException:
            self._abandon_construction()
            raise

    # -- construction

    @staticmethod
    def _prepare_workdir(workdir: Path | None, prefix: str) -> Path:
        if workdir is None:
            return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_STEM}{prefix}-"))
        workdir = workdir.resolve()
        if workdir.exists() and any(workdir.iterdir()):
            raise ValueError(f"lab workdir {workdir} must be empty: the lab deletes it at close")
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir

    def _claim(self, prefix: str, *, fixed: bool) -> _LabRecord:
        owner_ticks = _own_start_ticks()
        candidate = prefix
        for _attempt in range(8):
            record = _LabRecord(candidate, os.getpid(), owner_ticks, str(self.workdir))
            if record.claim():
                return record
            previous = _load_record(record.path)
            if previous is not None and not previous.owner_alive():
                problems = _dismantle(previous)
                if problems:
                    raise LabError(f"stale lab {candidate} is in the way: {'; '.join(problems)}")
                # The dead lab may have used this very (still empty) workdir.
                self.workdir.mkdir(parents=True, exist_ok=True)
                if record.claim():
                    return record
            if fixed:
                raise LabError(f"lab prefix {prefix!r} is in use by a running lab")
            candidate = _random_prefix()
        raise LabError("could not find a free lab prefix")

    def _abandon_construction(self) -> None:
        record = getattr(self, "_record", None)
        if record is not None:
            problems = _dismantle(record)
            if problems:
                log.error("lab %s half-built and not fully removed: %s", record.prefix, problems)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _create_netns(self, name: str) -> None:
        # Recorded before it exists: a crash in between must not leak it.
        if netns_exists(name):
            raise LabError(f"network namespace {name} already exists")
        self._record.namespaces.append(name)
        self._record.save()
        create_netns(name)

    def _create_fabric(self) -> None:
        self._create_netns(self.fabric_netns)
        fabric = ["ip", "-n", self.fabric_netns]
        run([*fabric, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])
        run([*fabric, "link", "add", TRUNK_BRIDGE, "type", "bridge"])
        # The trunk must pass every 802.1Q tag untouched. Kernels built without
        # bridge VLAN filtering refuse even to set it to 0, so only switch it off
        # where it reports on.
        if _bridge_vlan_filtering(self.fabric_netns, TRUNK_BRIDGE):
            run([*fabric, "link", "set", TRUNK_BRIDGE, "type", "bridge", "vlan_filtering", "0"])
        run([*fabric, "link", "set", UNDERLAY_BRIDGE, "up"])
        run([*fabric, "link", "set", TRUNK_BRIDGE, "up"])

    # -- public interface

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except LabError:
            if exc is None:
                raise
            # Keep the test's own failure in front; the teardown problem is logged.
            log.exception("lab %s teardown failed while handling another error", self.prefix)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this lab created (including removed VMs'), oldest first."""
        return list(self._record.namespaces)

    def next_tunnel_ip(self) -> str:
        """A free underlay address in 198.18.0.0/24, never handed out twice by this lab."""
        taken = self._handed_out_tunnel_ips | {
            h.tunnel_ip for h in self.hosts.values() if h.tunnel_ip
        }
        for address in UNDERLAY_NETWORK.hosts():
            if str(address) not in taken:
                self._handed_out_tunnel_ips.add(str(address))
                return str(address)
        raise LabError(f"underlay {UNDERLAY_NETWORK} is exhausted")

    def enable_management(self) -> str:
        """A management network, as hypervisors have one: the bridge `mg` in the fabric
        namespace, joined to the root namespace, where the service runs, by a veth
        `{prefix}mg` with the network's first address (returned). Hosts added with
        `management=True` get an address on it; the root namespace's end goes with
        the fabric namespace. Idempotent."""
        self._check_open()
        if self.management is not None:
            return str(self.management.ip)
        network = _free_management_network(self.prefix)
        root_end = f"{self.prefix}mg"
        _check_ifname(root_end)
        fabric = ["ip", "-n", self.fabric_netns]
        run([*fabric, "link", "add", MANAGEMENT_BRIDGE, "type", "bridge"])
        run([*fabric, "link", "set", MANAGEMENT_BRIDGE, "up"])
        run(["ip", "link", "add", root_end, "type", "veth", "peer", "name", "root-mg",
             "netns", self.fabric_netns])
        run([*fabric, "link", "set", "root-mg", "master", MANAGEMENT_BRIDGE, "up"])
        self.management = ipaddress.IPv4Interface(f"{next(network.hosts())}/{network.prefixlen}")
        run(["ip", "addr", "add", str(self.management), "dev", root_end])
        run(["ip", "link", "set", root_end, "up"])
        wait_link_up_root(root_end)
        return str(self.management.ip)

    def _management_address(self) -> ipaddress.IPv4Interface:
        assert self.management is not None
        taken = {h.management for h in self.hosts.values() if h.management is not None}
        network = self.management.network
        for address in list(network.hosts())[9:]:
            candidate = ipaddress.IPv4Interface(f"{address}/{network.prefixlen}")
            if candidate not in taken:
                return candidate
        raise LabError(f"management network {network} is exhausted")

    def add_host(
        self, name: str, *, tunnel_ip: str | None, uplink: bool = True,
        management: bool = False, prepare_underlay: bool = True,
    ) -> SimHost:
        """A simulated host: its own namespace, ovsdb-server and ovs-vswitchd.

        `tunnel_ip` (e.g. from `next_tunnel_ip()`) puts the host on the underlay
        with that address on `br-phy`; `uplink` gives it a `trunk0` on the trunk.
        br-int is not created: that is the controller's job. `management` gives it
        `mg0` with an address on the management network (`enable_management` first).
        `prepare_underlay=False` only wires `ul0`: br-phy and the address are left
        to the host's preparation (`ovs-fabric host prepare`), as on a real host.
        """
        self._check_open()
        _check_name("host", name)
        if name == "fab":
            raise ValueError("host name 'fab' is reserved for the fabric namespace")
        if name in self.hosts:
            raise ValueError(f"host {name!r} already exists in lab {self.prefix}")
        tunnel = None
        if tunnel_ip is not None:
            tunnel = _parse_interface(tunnel_ip, UNDERLAY_NETWORK.prefixlen)
            self._handed_out_tunnel_ips.add(str(tunnel.ip))
        for fabric_end in (f"{name}-ul", f"{name}-tr"):
            _check_ifname(fabric_end)
        if management and self.management is None:
            raise LabError("enable_management() before adding hosts with management=True")
        host = SimHost(
            lab=self, name=name, netns=f"{self.prefix}{name}", rundir=self.workdir / name,
            tunnel=tunnel, uplink=HOST_UPLINK_IF if uplink else None,
            management=self._management_address() if management else None,
            prepare_underlay=prepare_underlay,
        )
        # Registered first so that close() stops its daemons even if provisioning fails.
        self.hosts[name] = host
        host._provision()
        return host

    def host(self, name: str) -> SimHost:
        return self.hosts[name]

    def diagnostics(self) -> str:
        """What a failing test wants to see: OVS config, flows and log tails per host."""
        sections = [f"lab {self.prefix} (workdir {self.workdir})"]
        for host in self.hosts.values():
            sections.append(host.diagnostics())
        return "\n\n".join(sections)

    def close(self) -> None:
        """Stop every process and delete every namespace, veth and file of this lab.

        Idempotent; a failed close can be retried, and whatever it leaves stays
        registered for `cleanup_stale` once this process is gone.
        """
        if self._closed:
            return
        errors: list[str] = []
        for capture in self._captures:
            try:
                capture.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"capture on {capture.netns}/{capture.interface}: {exc}")
        for host in self.hosts.values():
            try:
                host.stop_ovs()
            except (OSError, TimeoutError) as exc:
                errors.append(f"OVS of host {host.name}: {exc}")
        if self.management is not None:
            # It would go with the fabric namespace, but only some time after; its
            # address and route must be gone when close() returns.
            run(["ip", "link", "del", f"{self.prefix}mg"], check=False)
        errors.extend(_dismantle(self._record))
        if errors:
            raise LabError(f"lab {self.prefix} not fully removed: " + "; ".join(errors))
        self._closed = True

    # -- internal helpers shared with hosts and VMs

    def _check_open(self) -> None:
        if self._closed:
            raise LabError(f"lab {self.prefix} is closed")

    def _start_capture(
        self, netns: str, interface: str, bpf_filter: str, direction: CaptureDirection
    ) -> Capture:
        self._check_open()
        capture = Capture(netns=netns, interface=interface, bpf_filter=bpf_filter,
                          direction=direction, output_dir=self.workdir / "captures")
        self._captures.append(capture)
        return capture


def _entries(ofctl_dump: str) -> list[str]:
    """The flow or group lines of an ovs-ofctl dump, without its reply headers."""
    return [line.strip() for line in ofctl_dump.splitlines()
            if line.strip() and not line.lstrip().startswith(("OFPST_", "NXST_"))]


def _free_management_network(prefix: str) -> ipaddress.IPv4Network:
    """A /24 of MANAGEMENT_SUPERNET that no route of the root namespace covers,
    starting from one derived from the lab's prefix (concurrent labs differ)."""
    subnets = [n for n in MANAGEMENT_SUPERNET.subnets(new_prefix=24) if n != UNDERLAY_NETWORK]
    start = int.from_bytes(prefix.encode(), "big") % len(subnets)
    routes = run(["ip", "-4", "route", "show", "table", "all"]).stdout
    used = set()
    for word in routes.split():
        try:
            used.add(ipaddress.IPv4Network(word, strict=False))
        except ValueError:
            continue
    for offset in range(len(subnets)):
        candidate = subnets[(start + offset) % len(subnets)]
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return candidate
    raise LabError(f"no free /24 for a management network in {MANAGEMENT_SUPERNET}")


def wait_link_up_root(ifname: str, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run(["ip", "-o", "link", "show", "dev", ifname]).stdout
        if "LOWER_UP" in state:
            return
        time.sleep(0.05)
    raise LabError(f"{ifname} did not come up within {timeout}s")


def _bridge_vlan_filtering(netns: str, bridge: str) -> bool:
    details = json.loads(run(["ip", "-n", netns, "-d", "-j", "link", "show", bridge]).stdout)
    info = details[0].get("linkinfo", {}).get("info_data", {})
    return bool(info.get("vlan_filtering", 0))


@dataclass(frozen=True)
class HostFacts:
    """What the service must be told to manage a simulated host, in its REST API's terms.

    The lab registers hosts over REST like any operator: it knows nothing of the
    controller's own model of a host.
    """

    name: str
    ovsdb_remote: str
    tunnel_ip: str | None
    uplink: str | None

    def registration(self) -> dict[str, str]:
        """The body of `POST /hosts` for this host; facts it lacks are left out."""
        return {key: value for key, value in asdict(self).items() if value is not None}


class _Namespaced:
    """A simulated machine: one network namespace of the lab."""

    netns: str

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this machine's namespace."""
        return run(in_netns(self.netns, cmd), check=check, timeout=timeout, input=input)


class SimHost(_Namespaced):
    """One simulated hypervisor: a namespace with its own OVS instance."""

    def __init__(
        self, *, lab: Lab, name: str, netns: str, rundir: Path,
        tunnel: ipaddress.IPv4Interface | None, uplink: str | None,
        management: ipaddress.IPv4Interface | None = None, prepare_underlay: bool = True,
    ) -> None:
        self.lab = lab
        self.management = management
        self.prepare_underlay = prepare_underlay
        self.name = name
        self.netns = netns
        self.rundir = rundir
        self.tunnel = tunnel
        self.uplink = uplink
        self.vms: dict[str, SimVM] = {}
        self.ovs = OvsDaemons(rundir, netns=netns, name=name)
        self._underlay_ready = False

    # -- identity

    @property
    def tunnel_ip(self) -> str | None:
        return None if self.tunnel is None else str(self.tunnel.ip)

    @property
    def management_ip(self) -> str | None:
        return None if self.management is None else str(self.management.ip)

    @property
    def db_path(self) -> Path:
        return self.ovs.db_path

    @property
    def ovsdb_remote(self) -> str:
        """Reachable from any namespace, the root one included."""
        return self.ovs.remote

    def mgmt_target(self, bridge: str = "br-int") -> str:
        """The bridge's OpenFlow management socket, for ovs-ofctl."""
        return self.ovs.mgmt_target(bridge)

    @property
    def facts(self) -> HostFacts:
        return HostFacts(name=self.name, ovsdb_remote=self.ovsdb_remote,
                         tunnel_ip=self.tunnel_ip, uplink=self.uplink)

    def __repr__(self) -> str:
        return f"SimHost({self.name!r}, netns={self.netns!r}, tunnel_ip={self.tunnel_ip!r})"

    # -- commands

    def vsctl(self, *args: str, timeout: float = 30.0) -> str:
        cmd = ["ovs-vsctl", f"--db={self.ovsdb_remote}", f"--timeout={max(1, int(timeout))}"]
        return run([*cmd, *args], timeout=timeout + 5).stdout.strip()

    def ofctl(
        self, *args: str, bridge: str | None = None, input: str | None = None,
        timeout: float = 30.0,
    ) -> str:
        """`ovs-ofctl -O OpenFlow13 [options] COMMAND <bridge mgmt socket> [ARGS]`.

        Leading arguments starting with '-' are options ("--bundle",
        "--strict"); the first other argument is the command. The bridge is
        `bridge`, else a bridge name written right after the command as with
        plain ovs-ofctl (`ofctl("add-flow", "br-int", "actions=drop")`), else br-int.
        """
        split = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
        if split is None:
            raise ValueError(f"ofctl needs a command: {args!r}")
        options, command, rest = args[:split], args[split], list(args[split + 1 :])
        if bridge is None:
            bridge = "br-int"
            if rest and self._names_a_bridge(rest[0]):
                bridge = rest.pop(0)
        cmd = ["ovs-ofctl", "-O", "OpenFlow13", *options, command, self.mgmt_target(bridge), *rest]
        return run(cmd, input=input, timeout=timeout).stdout

    def _names_a_bridge(self, word: str) -> bool:
        # A flow or match argument ("table=0,...", "arp") could look like a name:
        # only an existing bridge counts, and only plain words need the lookup.
        if not _BRIDGE_WORD_RE.match(word):
            return False
        return word in self.vsctl("list-br").split()

    def appctl(self, *args: str, target: Literal["vswitchd", "ovsdb"] = "vswitchd") -> str:
        return run(["ovs-appctl", "-t", str(self.ovs.ctl(target)), *args]).stdout

    def dump_flows(self, bridge: str = "br-int", *, stats: bool = False) -> list[str]:
        """Flow lines of the bridge, without counters unless `stats`."""
        options = [] if stats else ["--no-stats"]
        return _entries(self.ofctl(*options, "dump-flows", bridge=bridge))

    def dump_groups(self, bridge: str = "br-int") -> list[str]:
        return _entries(self.ofctl("dump-groups", bridge=bridge))

    def send_raw(self, interface: str, frame: bytes, *, count: int = 1) -> None:
        send_raw_frame(self.netns, interface, frame, count=count)

    def start_tcpdump(
        self, interface: str, bpf_filter: str = "", *, direction: CaptureDirection = "in"
    ) -> Capture:
        return self.lab._start_capture(self.netns, interface, bpf_filter, direction)

    # -- OVS lifecycle

    @property
    def ovs_running(self) -> bool:
        return self.ovs.running

    def start_ovs(self) -> None:
        """Start ovsdb-server and ovs-vswitchd on the existing conf.db (idempotent)."""
        self.lab._check_open()
        if not self.db_path.exists():
            raise LabError(f"{self.db_path} does not exist")
        self.ovs.start()
        if self._underlay_ready:
            self._address_underlay()

    def stop_ovs(self, *, hard: bool = False) -> None:
        """Stop vswitchd then ovsdb-server (SIGTERM, or SIGKILL to simulate a crash).

        Configuration stays in conf.db and the devices OVS created (br-phy's
        tap with its address) survive, as on a real host; flows are lost.
        """
        self.ovs.stop(hard=hard)

    # -- provisioning

    def _provision(self) -> None:
        self.lab._create_netns(self.netns)
        self.rundir.mkdir(parents=True)
        self.ovs.create_db()
        self.start_ovs()
        if self.tunnel is not None:
            self._connect_underlay()
        if self.uplink is not None:
            self._connect_trunk()
        if self.management is not None:
            self._veth_to_fabric(HOST_MANAGEMENT_IF, f"{self.name}-mg", MANAGEMENT_BRIDGE)
            run(["ip", "-n", self.netns, "addr", "add", str(self.management),
                 "dev", HOST_MANAGEMENT_IF])

    def _veth_to_fabric(self, host_end: str, fabric_end: str, fabric_bridge: str) -> None:
        fabric = self.lab.fabric_netns
        run(["ip", "-n", self.netns, "link", "add", host_end, "type", "veth",
             "peer", "name", fabric_end, "netns", fabric])
        run(["ip", "-n", fabric, "link", "set", fabric_end, "master", fabric_bridge, "up"])
        run(["ip", "-n", self.netns, "link", "set", host_end, "up"])
        wait_link_up(self.netns, host_end)

    def _connect_underlay(self) -> None:
        self._veth_to_fabric(HOST_UNDERLAY_IF, f"{self.name}-ul", UNDERLAY_BRIDGE)
        if not self.prepare_underlay:
            return
        # The userspace datapath sends VXLAN by its own routing table, which it
        # learns from the address on br-phy's internal port (sandbox.md).
        self.vsctl("--may-exist", "add-br", "br-phy",
                   "--", "set", "bridge", "br-phy", "datapath_type=netdev",
                   "--", "--may-exist", "add-port", "br-phy", HOST_UNDERLAY_IF)
        self._underlay_ready = True
        self._address_underlay()

    def _address_underlay(self) -> None:
        assert self.tunnel is not None
        run(["ip", "-n", self.netns, "addr", "replace", str(self.tunnel), "dev", "br-phy"])
        run(["ip", "-n", self.netns, "link", "set", "br-phy", "up"])

    def _connect_trunk(self) -> None:
        assert self.uplink is not None
        self._veth_to_fabric(self.uplink, f"{self.name}-tr", TRUNK_BRIDGE)

    # -- VMs

    def add_vm(
        self, name: str, *, mac: str, ip: str | None, prefix_len: int = 24,
        mtu: int = 1400, gateway: str | None = None,
    ) -> SimVM:
        """A VM namespace wired by a veth to this host; the host end stays unplugged.

        The host end is named `{host}-{vm}` (see `SimVM.host_interface`): the
        controller, not the lab, plugs it into br-int.
        """
        self.lab._check_open()
        _check_name("vm", name)
        if name in self.vms:
            raise ValueError(f"VM {name!r} already exists on host {self.name}")
        host_interface = f"{self.name}-{name}"
        _check_ifname(host_interface)
        address = None if ip is None else _parse_interface(ip, prefix_len)
        vm = SimVM(host=self, name=name, netns=f"{self.lab.prefix}{self.name}-{name}",
                   mac=_check_mac(mac), address=address, mtu=mtu,
                   host_interface=host_interface)
        self.lab._create_netns(vm.netns)
        self.vms[name] = vm
        run(["ip", "-n", self.netns, "link", "add", host_interface, "type", "veth",
             "peer", "name", VM_IF, "netns", vm.netns])
        run(["ip", "-n", vm.netns, "link", "set", VM_IF, "address", vm.mac, "mtu", str(mtu)])
        if address is not None:
            run(["ip", "-n", vm.netns, "addr", "add", str(address), "dev", VM_IF])
        run(["ip", "-n", vm.netns, "link", "set", VM_IF, "up"])
        if gateway is not None:
            run(["ip", "-n", vm.netns, "route", "add", "default", "via", gateway])
        # Userspace conntrack sees offloaded (not yet computed) TCP checksums as
        # invalid; computing them in the VM keeps ct_state sane (sandbox.md).
        vm.run("ethtool", "-K", VM_IF, "tx", "off")
        run(["ip", "-n", self.netns, "link", "set", host_interface, "mtu", str(mtu), "up"])
        wait_link_up(self.netns, host_interface)
        wait_link_up(vm.netns, VM_IF)
        return vm

    def remove_vm(self, name: str) -> None:
        """Destroy a VM: its namespace goes, and with it the veth pair."""
        vm = self.vms.pop(name)
        delete_netns(vm.netns)

    # -- diagnostics

    def diagnostics(self) -> str:
        parts = [f"== host {self.name} (netns {self.netns}, rundir {self.rundir})"]
        probes: list[tuple[str, Sequence[str]]] = [
            ("ovs-vsctl show", ["ovs-vsctl", f"--db={self.ovsdb_remote}", "--timeout=3", "show"]),
            ("dump-flows br-int", ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows",
                                   self.mgmt_target("br-int")]),
            ("dump-groups br-int", ["ovs-ofctl", "-O", "OpenFlow13", "dump-groups",
                                    self.mgmt_target("br-int")]),
            ("ip addr", in_netns(self.netns, ["ip", "-br", "addr"])),
        ]
        for title, cmd in probes:
            try:
                result = run(cmd, check=False, timeout=5)
                parts.append(f"-- {title}\n{result.stdout}{result.stderr}")
            except (OSError, subprocess.SubprocessError) as exc:
                parts.append(f"-- {title}: {exc}")
        log_file = self.rundir / "vswitchd.log"
        if log_file.exists():
            tail = log_file.read_text(errors="replace").splitlines()[-40:]
            parts.append("-- vswitchd.log (tail)\n" + "\n".join(tail))
        return "\n".join(parts)


class SimVM(_Namespaced):
    """A simulated VM: a namespace with one `eth0`."""

    def __init__(
        self, *, host: SimHost, name: str, netns: str, mac: str,
        address: ipaddress.IPv4Interface | None, mtu: int, host_interface: str,
    ) -> None:
        self.host = host
        self.name = name
        self.netns = netns
        self.mac = mac
        self.address = address
        self.mtu = mtu
        self.host_interface = host_interface

    @property
    def ip(self) -> str | None:
        return None if self.address is None else str(self.address.ip)

    def __repr__(self) -> str:
        return f"SimVM({self.name!r}, host={self.host.name!r}, mac={self.mac!r}, ip={self.ip!r})"

    def _ping_counts(
        self, ip: str, count: int, timeout: float | None, source: str | None
    ) -> tuple[int, int]:
        deadline = timeout if timeout is not None else 0.2 * count + 2.0
        cmd = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1",
               "-w", str(max(1, round(deadline)))]
        if source is not None:
            cmd += ["-I", source]
        result = self.run(*cmd, ip, check=False, timeout=deadline + 10)
        summary = _PING_SUMMARY_RE.search(result.stdout)
        if summary is None:  # e.g. "Network is unreachable": nothing was even sent
            return count, 0
        return int(summary.group(1)), int(summary.group(2))

    def ping(
        self, ip: str, *, count: int = 3, timeout: float | None = None,
        source: str | None = None,
    ) -> bool:
        """True if at least one of `count` echo requests was answered.

        `timeout` bounds the whole run (default: enough for `count` replies);
        `source` picks the source address (it must be configured on eth0).
        """
        _sent, received = self._ping_counts(ip, count, timeout, source)
        return received > 0

    def ping_loss(
        self, ip: str, *, count: int = 5, timeout: float | None = None,
        source: str | None = None,
    ) -> float:
        """Percentage of `count` echo requests that went unanswered."""
        sent, received = self._ping_counts(ip, count, timeout, source)
        return 100.0 * (sent - received) / sent if sent else 100.0

    def wait_for_ping(
        self, ip: str, *, timeout: float = 15.0, source: str | None = None
    ) -> bool:
        """Ping once per second until answered (e.g. while a controller installs
        flows); False if `timeout` passes without an answer."""
        deadline = time.monotonic() + timeout
        while True:
            attempt_started = time.monotonic()
            if self.ping(ip, count=1, timeout=1, source=source):
                return True
            if time.monotonic() >= deadline:
                return False
            # An immediate failure (no route yet) must not turn into a busy loop.
            time.sleep(max(0.0, 0.5 - (time.monotonic() - attempt_started)))

    def send_raw(self, frame: bytes, *, count: int = 1) -> None:
        """Put a hand-made frame on the wire from eth0 (spoofed MACs, ARP, 802.1Q...)."""
        send_raw_frame(self.netns, VM_IF, frame, count=count)

    def start_tcpdump(
        self, bpf_filter: str = "", *, direction: CaptureDirection = "in"
    ) -> Capture:
        """Capture on eth0; by default only what arrives at the VM."""
        return self.host.lab._start_capture(self.netns, VM_IF, bpf_filter, direction)
