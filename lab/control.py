"""The control socket of the process that owns a running lab (see lab/state.py).

Requests are served one at a time on one thread: a Lab is driven by one owner.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.hosts import Lab, LabError
from lab.state import CONTROL_SOCKET, LabState, VmState

log = logging.getLogger(__name__)


class LabControl:
    """Serves `vm_add`, `vm_rm` and `shutdown` for `lab` until shut down."""

    def __init__(self, lab: Lab, state: LabState, directory: Path,
                 shutdown: Callable[[], None]) -> None:
        self._lab = lab
        self._state = state
        self._directory = directory
        self._shutdown = shutdown
        path = directory / CONTROL_SOCKET
        path.unlink(missing_ok=True)
        control = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    message = json.loads(self.rfile.readline())
                    reply = {"ok": True, **control.handle(message)}
                except (LabError, ValueError, KeyError, OSError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                self.wfile.write(json.dumps(reply).encode() + b"\n")

        self._server = socketserver.UnixStreamServer(str(path), Handler)
        path.chmod(0o600)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lab-control", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        (self._directory / CONTROL_SOCKET).unlink(missing_ok=True)

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "vm_add":
            return self._vm_add(message)
        if op == "vm_rm":
            return self._vm_rm(str(message["name"]))
        if op == "shutdown":
            self._shutdown()
            return {}
        raise ValueError(f"unknown request {op!r}")

    def _vm_add(self, message: dict[str, Any]) -> dict[str, Any]:
        name, host_name = str(message["name"]), str(message["host"])
        if name in self._state.vms:
            raise ValueError(f"VM {name} already exists (on host {self._state.vms[name].host})")
        host = self._lab.hosts.get(host_name)
        if host is None:
            raise ValueError(f"no host {host_name!r} in the lab (hosts: {sorted(self._lab.hosts)})")
        ip = message.get("ip")
        vm = host.add_vm(name, mac=str(message["mac"]), ip=ip,
                         prefix_len=int(message.get("prefix_len", 24)))
        self._state.vms[name] = VmState(
            name=name, host=host_name, netns=vm.netns, network=str(message["network"]),
            port_id=str(message["port_id"]), ip=vm.ip, mac=vm.mac,
            created_port=bool(message.get("created_port", False)),
        )
        self._state.save(self._directory)
        log.info("VM %s added on %s (netns %s)", name, host_name, vm.netns)
        return {"netns": vm.netns, "interface": vm.host_interface}

    def _vm_rm(self, name: str) -> dict[str, Any]:
        vm = self._state.vms.get(name)
        if vm is None:
            raise ValueError(f"no VM {name!r} in the lab")
        self._lab.hosts[vm.host].remove_vm(name)
        del self._state.vms[name]
        self._state.save(self._directory)
        return {}
