"""`ovs-fabric host prepare`: make a hypervisor's OVS ready to be managed over TLS.

Run on the hypervisor, as root, against its local OVSDB. Every step checks the
current state first and changes only what differs, so running it again is safe:

1. OVS's SSL table: the host's key, certificate and the CA (`ovs-vsctl set-ssl`);
   ovsdb-server's OVSDB listener and ovs-vswitchd's OpenFlow connection use it.
2. The OVSDB listener: `pssl:PORT:ADDR` among the managers; plaintext `ptcp:`
   listeners are removed (they would let anyone on the network reprogram the switch).
3. Optionally the underlay: bridge `br-phy` (userspace datapath) with the
   underlay NIC as its port and the underlay address on its internal port, which
   is where the userspace datapath learns the route for VXLAN.
4. Optionally the trunk NIC is brought up (the controller adds it to br-int).

ovsdb-server must read its remotes and SSL settings from the database, as
Debian's and Red Hat's ovs-ctl start it: `--remote=db:Open_vSwitch,Open_vSwitch,manager_options
--private-key=db:Open_vSwitch,SSL,private_key --certificate=db:Open_vSwitch,SSL,certificate
--ca-cert=db:Open_vSwitch,SSL,ca_cert`.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from api.pki import PkiDir, PkiError, check_host_name, common_name, load_certificate

UNDERLAY_BRIDGE: Final = "br-phy"
PLAINTEXT_LISTENERS: Final = ("ptcp:", "tcp:")


class PrepareError(Exception):
    """A step could not be done; one line for the operator."""


@dataclass(frozen=True)
class HostPlan:
    name: str
    pki_dir: Path
    ovsdb_listen: str  # ADDR:PORT
    underlay_ip: str | None = None  # CIDR
    underlay_if: str | None = None
    trunk: str | None = None
    datapath_type: str = "netdev"
    db: str | None = None  # ovs-vsctl --db; None: the local default socket


Runner = Callable[[Sequence[str]], str]


def run_command(cmd: Sequence[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise PrepareError(f"{cmd[0]} not found (is openvswitch-switch / iproute2 installed?)")
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise PrepareError(f"`{' '.join(cmd)}` failed: {detail[-1] if detail else done.returncode}")
    return done.stdout


def parse_listen(value: str) -> tuple[str, int]:
    address, sep, port = value.rpartition(":")
    address = address.strip("[]")
    try:
        parsed = ipaddress.ip_address(address)
        number = int(port)
    except ValueError:
        raise PrepareError(f"--ovsdb-listen {value!r} is not ADDRESS:PORT") from None
    if not sep or not 0 < number < 65536:
        raise PrepareError(f"--ovsdb-listen {value!r} is not ADDRESS:PORT")
    return str(parsed), number


def ovsdb_remote_for(value: str) -> str:
    """The `ovsdb_remote` to register for a host prepared with --ovsdb-listen VALUE."""
    address, port = parse_listen(value)
    host = f"[{address}]" if ":" in address else address
    return f"ssl:{host}:{port}"


def prepare(plan: HostPlan, *, runner: Runner = run_command) -> list[str]:
    """Apply `plan`; returns one line per change made (empty: nothing to do)."""
    check_host_name(plan.name)
    address, port = parse_listen(plan.ovsdb_listen)
    if (plan.underlay_ip is None) != (plan.underlay_if is None):
        raise PrepareError("--underlay-ip and --underlay-if go together")
    # --no-wait: the database is the configuration; ovs-vswitchd need not be running.
    vsctl = ["ovs-vsctl", "--timeout=10", "--no-wait", *([f"--db={plan.db}"] if plan.db else [])]
    changes: list[str] = []

    key, cert, ca = _host_files(plan)
    wanted_ssl = (str(key), str(cert), str(ca))
    if _current_ssl(runner([*vsctl, "get-ssl"])) != wanted_ssl:
        runner([*vsctl, "set-ssl", *wanted_ssl])
        changes.append(f"SSL: key {key}, certificate {cert}, CA {ca}")

    listener = f"pssl:{port}:{f'[{address}]' if ':' in address else address}"
    managers = runner([*vsctl, "get-manager"]).split()
    kept = [m for m in managers if not m.startswith(PLAINTEXT_LISTENERS) and m != listener]
    if managers != [*kept, listener]:
        runner([*vsctl, "set-manager", *kept, listener])
        dropped = [m for m in managers if m.startswith(PLAINTEXT_LISTENERS)]
        changes.append(
            f"OVSDB listener {listener}"
            + (f" (removed plaintext {', '.join(dropped)})" if dropped else "")
        )

    if plan.underlay_ip is not None and plan.underlay_if is not None:
        changes.extend(_underlay(plan, plan.underlay_ip, plan.underlay_if, vsctl, runner))
    if plan.trunk is not None and "UP" not in _link_flags(runner, plan.trunk):
        runner(["ip", "link", "set", plan.trunk, "up"])
        changes.append(f"trunk {plan.trunk} up")
    return changes


def _host_files(plan: HostPlan) -> tuple[Path, Path, Path]:
    pki = PkiDir(plan.pki_dir)
    pair = pki.host(plan.name)
    ca = pki.ca.certificate
    for path in (*pair.paths(), ca):
        if not path.is_file():
            raise PrepareError(
                f"{path} is missing: copy it from the CA machine"
                f" (`ovs-fabric pki host {plan.name}` makes the host's pair)"
            )
    try:
        name = common_name(load_certificate(pair.certificate))
    except PkiError as exc:
        raise PrepareError(str(exc)) from None
    if name != plan.name:
        raise PrepareError(f"{pair.certificate} is for {name!r}, not {plan.name!r}")
    return pair.private_key.resolve(), pair.certificate.resolve(), ca.resolve()


def _current_ssl(text: str) -> tuple[str, str, str] | None:
    """`ovs-vsctl get-ssl` output ("Private key: /x\\nCertificate: /y\\nCA Certificate: /z...")."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if sep:
            fields[label.strip()] = value.strip()
    try:
        return fields["Private key"], fields["Certificate"], fields["CA Certificate"]
    except KeyError:
        return None


def _underlay(plan: HostPlan, cidr: str, nic: str, vsctl: list[str], runner: Runner) -> list[str]:
    try:
        interface = ipaddress.ip_interface(cidr)
    except ValueError:
        raise PrepareError(f"--underlay-ip {cidr!r} is not ADDRESS/PREFIX") from None
    if "/" not in cidr:
        raise PrepareError(f"--underlay-ip {cidr!r} needs a prefix length (e.g. /24)")
    changes: list[str] = []
    bridges = runner([*vsctl, "list-br"]).split()
    ports = []
    if UNDERLAY_BRIDGE in bridges:
        ports = runner([*vsctl, "list-ports", UNDERLAY_BRIDGE]).split()
    if nic not in ports:
        # Waits for ovs-vswitchd to create br-phy's internal port: the address goes on it.
        waiting = [arg for arg in vsctl if arg != "--no-wait"]
        runner(
            [
                *waiting,
                "--may-exist",
                "add-br",
                UNDERLAY_BRIDGE,
                "--",
                "set",
                "bridge",
                UNDERLAY_BRIDGE,
                f"datapath_type={plan.datapath_type}",
                "--",
                "--may-exist",
                "add-port",
                UNDERLAY_BRIDGE,
                nic,
            ]
        )
        changes.append(f"bridge {UNDERLAY_BRIDGE} ({plan.datapath_type}) with port {nic}")
    runner(["ip", "link", "set", nic, "up"])
    shown = runner(["ip", "-o", "addr", "show", "dev", UNDERLAY_BRIDGE])
    if f" {interface.with_prefixlen} " not in f" {shown} ".replace("\n", " "):
        runner(["ip", "addr", "replace", str(interface), "dev", UNDERLAY_BRIDGE])
        changes.append(f"underlay address {interface} on {UNDERLAY_BRIDGE}")
    if "UP" not in _link_flags(runner, UNDERLAY_BRIDGE):
        runner(["ip", "link", "set", UNDERLAY_BRIDGE, "up"])
        changes.append(f"{UNDERLAY_BRIDGE} up")
    return changes


def _link_flags(runner: Runner, ifname: str) -> set[str]:
    """The administrative flags of a link ("<BROADCAST,MULTICAST,UP,LOWER_UP>")."""
    shown = runner(["ip", "-o", "link", "show", "dev", ifname])
    return set(shown.partition("<")[2].partition(">")[0].split(","))
