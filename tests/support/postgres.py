"""A throwaway PostgreSQL server for a test: its own data directory, loopback only.

Debian's `postgresql` package provides the binaries (/usr/lib/postgresql/N/bin);
initdb and the server refuse to run as root, so both run as the `postgres` user,
on a data directory made for this server under /tmp and removed afterwards.
`stop()` and `start()` make outages; `running_postgres()` always stops and
removes the server, whatever happened in the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from api.launcher import free_tcp_port

SERVER_USER = "postgres"


class PostgresError(RuntimeError):
    pass


def postgres_bin() -> Path:
    """The newest installed server's binary directory."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        raise PostgresError("no PostgreSQL server installed (apt-get install postgresql)")
    return found[-1]


class PostgresServer:
    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_tcp_port()
        self.root = Path(tempfile.mkdtemp(prefix="ovs-fabric-pg."))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        shutil.chown(self.root, user=SERVER_USER)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the server's `postgres` database (trust auth on loopback)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            ["runuser", "-u", SERVER_USER, "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{self.log_tail()}"
            )

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")

    def start(self) -> None:
        options = f"-k {self.root} -h 127.0.0.1 -p {self.port} -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended, data is kept)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def running(self) -> bool:
        return self._postmaster_pid() is not None

    def _postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def remove(self) -> None:
        """Stop the server if it runs (killing it if it will not stop) and delete it all."""
        if self.running:
            try:
                self.stop()
            except (PostgresError, subprocess.TimeoutExpired):
                pid = self._postmaster_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh server, started; stopped and removed afterwards whatever happens."""
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
