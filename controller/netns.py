"""Network namespaces, commands and daemon processes: the I/O under the lab.

Everything here shells out to iproute2 or reads /proc; nothing knows about OVS
or about labs. A daemon is identified by its pid *and* its start time, because
pids are reused and a stale pidfile must never make us kill a stranger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
DEFAULT_TIMEOUT = 30.0
STOP_GRACE = 5.0


class CommandError(RuntimeError):
    """A command exited non-zero; carries its output so failures explain themselves."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(f"{' '.join(self.cmd)} exited {returncode}: {detail}")


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    log.debug("run: %s", " ".join(cmd))
    completed = subprocess.run(
        list(cmd),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )
    if check and completed.returncode != 0:
        raise CommandError(cmd, completed.returncode, completed.stdout, completed.stderr)
    return completed


def in_netns(netns: str, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *cmd]


def poll_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Wait for a condition with a hard bound; the error says what never happened."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


# ---- namespaces --------------------------------------------------------------------


def list_netns() -> list[str]:
    """Names of the named network namespaces (those `ip netns add` created)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(entry.name for entry in NETNS_DIR.iterdir())


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_netns(name: str) -> None:
    """Create a namespace with loopback up and IPv6 off.

    IPv6 is off because link-local autoconfiguration, router and MLD
    solicitations would otherwise put unsolicited frames on every simulated
    wire, and tests that prove by capture that nothing arrived need silence.
    """
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    run(
        in_netns(
            name,
            [
                "sysctl", "-q", "-e", "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )
    )


def netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    result = run(["ip", "netns", "pids", name], check=False)
    return [int(token) for token in result.stdout.split() if token.isdigit()]


def delete_netns(name: str, *, grace: float = STOP_GRACE) -> None:
    """Kill whatever still runs inside the namespace, then delete it.

    A process left inside would keep the namespace (and its veths) alive after
    the name is gone, invisible to `ip netns list`.
    """
    if not netns_exists(name):
        return
    stop_processes(netns_pids(name), grace=grace)
    run(["ip", "netns", "delete", name])


def link_operstate(netns: str, ifname: str) -> str:
    output = run(["ip", "-n", netns, "-j", "link", "show", ifname]).stdout
    return str(json.loads(output)[0].get("operstate", "UNKNOWN"))


def wait_link_up(netns: str, ifname: str, *, timeout: float = 10.0) -> None:
    """Wait until the kernel reports the link operationally up.

    A veth gets its carrier as soon as both ends are up, but the operstate
    (what OVS and `ip link` report) follows a little later from a workqueue.
    """
    poll_until(lambda: link_operstate(netns, ifname) == "UP", timeout=timeout,
               what=f"{ifname} in {netns} to be up")


# ---- processes ---------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """Start time of a live process (clock ticks since boot), None if gone or a zombie.

    A zombie counts as gone: it holds no resources, and in a container whose
    init does not reap promptly it may linger long after it was killed.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], fields[19]
    if state in ("Z", "X"):
        return None
    return int(start_ticks)


def process_alive(pid: int) -> bool:
    return process_start_ticks(pid) is not None


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def stop_processes(
    pids: Sequence[int], *, grace: float = STOP_GRACE, hard: bool = False
) -> None:
    """SIGTERM (or SIGKILL when `hard`), wait up to `grace`, then SIGKILL the rest."""
    alive = [pid for pid in pids if process_alive(pid)]
    if not alive:
        return
    for pid in alive:
        _signal(pid, signal.SIGKILL if hard else signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = [pid for pid in alive if process_alive(pid)]
        if not alive:
            return
        time.sleep(0.02)
    for pid in alive:
        log.warning("process %d ignored SIGTERM for %.1fs; killing it", pid, grace)
        _signal(pid, signal.SIGKILL)
    poll_until(
        lambda: not any(process_alive(pid) for pid in alive),
        timeout=grace,
        what=f"processes {alive} to die after SIGKILL",
    )
