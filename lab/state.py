"""The running playground lab, as other `ovs-fabric lab` commands find it.

`lab up` (in the foreground, or detached in the background) writes a state file
and listens on a control socket, both in the state directory (/run/ovs-fabric/lab
unless OVS_FABRIC_LAB_STATE_DIR or --state-dir says otherwise). The state says
where the service is and which VM is which namespace; the control socket is how
other commands ask the owning process to change the lab (only it may: it owns
the namespaces and the lab's ownership record). One JSON request and one JSON
answer per connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_STATE_DIR = Path("/run/ovs-fabric/lab")
STATE_DIR_ENV = "OVS_FABRIC_LAB_STATE_DIR"
STATE_FILE = "state.json"
CONTROL_SOCKET = "control.sock"
LOG_FILE = "lab.log"
CONTROL_TIMEOUT = 120.0

Phase = Literal["starting", "ready", "failed", "stopping"]


class LabStateError(Exception):
    """No lab runs, or it cannot be reached: one line for the user."""


def state_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit.resolve()
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


@dataclass
class VmState:
    name: str
    host: str
    netns: str
    network: str  # network name as the API knows it
    port_id: str
    ip: str | None
    mac: str
    created_port: bool  # `vm rm` deletes the port only if the lab made it


@dataclass
class LabState:
    pid: int
    prefix: str
    workdir: str
    url: str
    token: str
    phase: Phase = "starting"
    error: str | None = None
    hosts: dict[str, str] = field(default_factory=dict)  # name -> netns
    vms: dict[str, VmState] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f"{STATE_FILE}.tmp"
        # The token is an admin token: only root reads it.
        temporary.write_text(json.dumps(asdict(self), indent=2))
        temporary.chmod(0o600)
        temporary.replace(directory / STATE_FILE)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        vms = {name: VmState(**vm) for name, vm in data.pop("vms", {}).items()}
        return cls(**data, vms=vms)


def load_state(directory: Path) -> LabState | None:
    try:
        return LabState.from_json((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise LabStateError(f"unreadable lab state {directory / STATE_FILE}: {exc}") from None


def require_state(directory: Path) -> LabState:
    state = load_state(directory)
    if state is None:
        raise LabStateError(
            f"no lab is running (no {directory / STATE_FILE}); start one with "
            "`ovs-fabric lab up --detach`"
        )
    return state


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request(directory: Path, op: str, **arguments: Any) -> dict[str, Any]:
    """Ask the process that owns the lab to do `op`; its answer, or LabStateError."""
    path = directory / CONTROL_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONTROL_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise LabStateError(
                f"the lab's owner does not answer on {path} ({exc.strerror}); "
                "`ovs-fabric lab down` removes what is left"
            ) from None
        sock.sendall(json.dumps({"op": op, **arguments}).encode() + b"\n")
        with contextlib.closing(sock.makefile("rb")) as answer:
            line = answer.readline()
    if not line:
        raise LabStateError(f"the lab's owner closed the connection during {op}")
    reply: dict[str, Any] = json.loads(line)
    if not reply.get("ok"):
        raise LabStateError(str(reply.get("error", f"{op} failed")))
    return reply
