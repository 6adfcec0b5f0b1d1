"""Network namespaces, commands, daemon processes, raw frames and captures: the I/O
under the lab.

Everything here shells out (iproute2, tcpdump, a python snippet) or reads /proc;
nothing knows about OVS or about labs. A daemon is identified by its pid *and*
its start time, because pids are reused and a stale pidfile must never make us
kill a stranger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
DEFAULT_TIMEOUT = 30.0
STOP_GRACE = 5.0
CAPTURE_START_TIMEOUT = 15.0

CaptureDirection = Literal["in", "out", "inout"]


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


def pid_running_from(pidfile: Path, directory: Path) -> int | None:
    """The live process `pidfile` names, if its command line mentions `directory`.

    The command line check guards against a stale pidfile naming a pid reused
    by an unrelated process.
    """
    pid = read_pidfile(pidfile)
    if pid is None or not process_alive(pid):
        return None
    if not any(str(directory) in arg for arg in process_cmdline(pid)):
        return None
    return pid


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


# ---- raw frames ---------------------------------------------------------------------


_SEND_RAW_SNIPPET = """\
import socket, sys
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((sys.argv[1], 0))
frame = bytes.fromhex(sys.argv[2])
for _ in range(int(sys.argv[3])):
    sock.send(frame)
"""


def send_raw_frame(netns: str, interface: str, frame: bytes, *, count: int = 1) -> None:
    """Transmit a hand-made Ethernet frame on an interface inside a namespace."""
    run(in_netns(netns, [sys.executable, "-c", _SEND_RAW_SNIPPET, interface, frame.hex(),
                         str(count)]))


# ---- packet capture ----------------------------------------------------------------


class CaptureError(RuntimeError):
    """tcpdump did not start (bad filter, missing interface...)."""


class Capture:
    """A tcpdump running on one interface inside a namespace.

    Packet lines are tcpdump's `-n -e` one-line summaries (link-level header
    included, so VLAN tags show as "vlan 100"). The capture is open when the
    constructor returns, so a packet sent afterwards cannot be missed.
    """

    def __init__(
        self, *, netns: str, interface: str, bpf_filter: str,
        direction: CaptureDirection, output_dir: Path,
    ) -> None:
        self.netns = netns
        self.interface = interface
        output_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{netns}-{interface}-{time.monotonic_ns()}"
        self.output = output_dir / f"{stem}.txt"
        self._stderr_path = output_dir / f"{stem}.err"
        self._result: list[str] | None = None
        cmd = ["tcpdump", "-l", "-n", "-e", "--immediate-mode", "-Q", direction, "-i", interface]
        if bpf_filter:
            cmd.append(bpf_filter)
        with self.output.open("w") as out, self._stderr_path.open("w") as err:
            self._process = subprocess.Popen(in_netns(netns, cmd), stdout=out, stderr=err)
        try:
            poll_until(self._listening, timeout=CAPTURE_START_TIMEOUT,
                       what=f"tcpdump on {netns}/{interface} to start listening")
        except TimeoutError as exc:
            self.stop()
            raise CaptureError(f"{exc}: {self._stderr_path.read_text().strip()}") from exc

    def _listening(self) -> bool:
        if self._process.poll() is not None:
            raise CaptureError(
                f"tcpdump on {self.netns}/{self.interface} exited: "
                f"{self._stderr_path.read_text().strip()}"
            )
        return "listening on" in self._stderr_path.read_text()

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def lines(self) -> list[str]:
        """The packets captured so far (the capture keeps running)."""
        if self._result is not None:
            return list(self._result)
        return [line for line in self.output.read_text().splitlines() if line.strip()]

    def wait_for_packets(self, count: int = 1, *, timeout: float = 10.0) -> bool:
        """True as soon as `count` packets were captured, False at the timeout."""
        try:
            poll_until(lambda: len(self.lines()) >= count, timeout=timeout,
                       what=f"{count} packet(s) on {self.netns}/{self.interface}")
        except TimeoutError:
            return False
        return True

    def stop(self) -> list[str]:
        """Stop capturing (idempotent) and return every captured packet line."""
        if self._result is None:
            if self._process.poll() is None:
                # SIGINT makes tcpdump flush what it holds before exiting.
                self._process.send_signal(signal.SIGINT)
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=5)
            self._result = [
                line for line in self.output.read_text().splitlines() if line.strip()
            ]
        return list(self._result)
