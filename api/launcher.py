"""Run the service (`ovs-fabric serve`) as a child process and wait until it answers.

os-ken keeps process-wide state, so the lab command and the end-to-end tests
each run the real service in its own process, configured by environment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.paths import HEALTH_PATH


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceStartError(Exception):
    pass


class ServiceProcess:
    """The service on loopback with its own SQLite file, OpenFlow port and admin token."""

    def __init__(
        self,
        workdir: Path,
        *,
        datapath_type: str = "netdev",
        api_port: int | None = None,
        openflow_port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.api_port = api_port or free_tcp_port()
        self.openflow_port = openflow_port or free_tcp_port()
        self.admin_token = secrets.token_urlsafe(24)
        self.database_path = workdir / "ovs-fabric.db"
        self.log_path = workdir / "service.log"
        self.env = {
            **os.environ,
            "OVS_FABRIC_DATABASE_URL": f"sqlite:///{self.database_path}",
            "OVS_FABRIC_API_HOST": "127.0.0.1",
            "OVS_FABRIC_API_PORT": str(self.api_port),
            "OVS_FABRIC_OPENFLOW_LISTEN_HOST": "127.0.0.1",
            "OVS_FABRIC_OPENFLOW_PORT": str(self.openflow_port),
            "OVS_FABRIC_ADMIN_TOKEN": self.admin_token,
            "OVS_FABRIC_DATAPATH_TYPE": datapath_type,
            "OVS_FABRIC_LIBVIRT_ENABLED": "false",
            **(extra_env or {}),
        }
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServiceStartError(
                    f"the service exited with {self._process.returncode}; log:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}{HEALTH_PATH}", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise ServiceStartError(
            f"the service did not answer within {timeout}s; log:\n{self.log_tail()}"
        )

    def stop(self, *, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit status (negative: killed by
        that signal), or None if the service was not running."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()

    def kill(self) -> None:
        """Die without any shutdown, as on a crash or `kill -9`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
