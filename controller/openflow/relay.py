"""Relay from a unix socket in a host's OVS run directory to the OpenFlow listener.

OVS accepts a `unix:` controller target only inside its own run directory, and
an OVS running in another network namespace cannot reach our 127.0.0.1. The
run directory is shared through the filesystem, so the service listens on a
unix socket there and pipes each connection to its own TCP listener.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        # Half-close so the other direction drains before both ends go.
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class UnixToTcpRelay:
    def __init__(self, path: Path, target: tuple[str, int]) -> None:
        self.path = path
        self.target = target
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.fspath(self.path))
        # Every bridge of the OVS behind this socket reconnects at once after a restart;
        # beyond the backlog a connect fails at once and that switch waits out its
        # reconnect backoff (25 bridges behind one socket: a tenth of them came back
        # 2 s late with 16).
        listener.listen(socket.SOMAXCONN)
        self._listener = listener
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"relay:{self.path.name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
                # Without it, a reply written while the previous one is unacknowledged
                # (a bundle's commit reply after its open reply) waits for the
                # controller's delayed ACK: 40 ms on Linux.
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                log.warning("relay %s: cannot reach %s:%d: %s", self.path, *self.target, exc)
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        _pipe(source, sink)
        with self._lock:
            self._conns.discard(source)
        source.close()
