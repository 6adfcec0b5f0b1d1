"""A real DHCP client (busybox udhcpc) run inside a VM namespace, and what it was told."""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.hosts import SimVM
from tests.support.guest import UDHCPC_CONFIGURE

# udhcpc runs this on every event; on a lease it configures eth0 the way a guest's
# init script does (address, MTU, default route) and writes what it got to $1's file.
_SCRIPT = UDHCPC_CONFIGURE + """\
printf 'ip=%s\\nmask=%s\\nrouter=%s\\nmtu=%s\\ndns=%s\\nserverid=%s\\nlease=%s\\n' \\
    "$ip" "$mask" "$router" "$mtu" "$dns" "$serverid" "$lease" > "$LEASE_FILE"
"""


@dataclass(frozen=True)
class DhcpResult:
    """What udhcpc was given (None: no lease) and what it printed."""

    lease: dict[str, str] | None
    output: str


def run_udhcpc(vm: SimVM, *, tries: int = 4, timeout: float = 1.0) -> DhcpResult:
    """DISCOVER/REQUEST from the VM's eth0 until a lease or `tries` discovers without one."""
    with tempfile.TemporaryDirectory(prefix="ovsf-dhcp-") as tmp:
        script = Path(tmp) / "udhcpc.script"
        script.write_text(_SCRIPT)
        script.chmod(0o755)
        lease_file = Path(tmp) / "lease"
        cmd = (
            f"LEASE_FILE={shlex.quote(str(lease_file))} busybox udhcpc -i eth0 -f -n -q "
            f"-t {tries} -T {timeout:g} -A 1 -O mtu -s {shlex.quote(str(script))}"
        )
        result = subprocess.run(
            ["ip", "netns", "exec", vm.netns, "sh", "-c", cmd],
            capture_output=True,
            text=True,
            timeout=tries * timeout + 20,
            check=False,
        )
        lease = None
        if lease_file.exists():
            lease = dict(
                line.split("=", 1) for line in lease_file.read_text().splitlines() if "=" in line
            )
        return DhcpResult(lease, result.stdout + result.stderr)
