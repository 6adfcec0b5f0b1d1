"""The OpenFlow TLS listener: mutual TLS in front of os-ken's plaintext listener.

A switch connects with TLS, must present a certificate from our CA, and is
then piped to os-ken's own listener on this machine. Why not os-ken's built-in
TLS (ctl_privkey / ctl_cert / ca_certs)? It does demand a client certificate,
but on native threads it reads and writes one SSL object from two threads at
once (OpenSSL forbids it), retries any SSLError in its receive loop forever, and
a refused handshake ends as an "uncaught exception" traceback with no word of
who was refused. Here one asyncio loop owns every TLS connection, a handshake
has a deadline, and each refusal is recorded by the peer's address, for the
host agents to report on the host it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from controller.tls import TlsFiles, describe_handshake_failure, peer_names

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 5.0
_CHUNK: Final = 1 << 16
_REMEMBERED_PEERS: Final = 1024


@dataclass(frozen=True)
class TlsListener:
    """Where the TLS listener binds and what it presents and accepts."""

    files: TlsFiles
    host: str
    port: int


@dataclass(frozen=True)
class Refusal:
    at: float  # time.monotonic()
    reason: str


class RefusalLog:
    """The last refused handshake per peer address (bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_address: OrderedDict[str, Refusal] = OrderedDict()

    def record(self, address: str, reason: str) -> None:
        with self._lock:
            self._by_address.pop(address, None)
            self._by_address[address] = Refusal(time.monotonic(), reason)
            while len(self._by_address) > _REMEMBERED_PEERS:
                self._by_address.popitem(last=False)

    def accepted(self, address: str) -> None:
        with self._lock:
            self._by_address.pop(address, None)

    def latest(self, address: str) -> Refusal | None:
        with self._lock:
            return self._by_address.get(address)


# NOTE: one per process, like os-ken's own state (start_openflow_controller runs once).
REFUSALS: Final = RefusalLog()


class TlsFront:
    """Accepts TLS on `listener`, pipes each verified connection to `backend` (host, port)."""

    def __init__(
        self, listener: TlsListener, backend: tuple[str, int], refusals: RefusalLog = REFUSALS
    ) -> None:
        self.listener = listener
        self.backend = backend
        self.refusals = refusals
        # Loaded now: a missing or unreadable file fails the service's start, loudly.
        self._context = listener.files.server_context()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ofp-tls", daemon=True)

    def start(self) -> None:
        """Bind (raises OSError if the address is taken) and serve on a daemon thread."""
        # Started from whatever thread (uvicorn's event loop, in the service): the
        # listener is bound on its own loop's thread, and a failure to bind raised here.
        self._thread.start()
        binding = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(
                lambda: _Accepted(self._spawn), self.listener.host, self.listener.port
            ),
            self._loop,
        )
        try:
            self._server = binding.result(timeout=10)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            raise
        log.info(
            "OpenFlow TLS listener on %s:%d (client certificates required)",
            self.listener.host,
            self.listener.port,
        )

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _spawn(self, transport: asyncio.Transport) -> None:
        # NOTE: the loop keeps only weak references to tasks: a connection's task
        # (and with it the connection) would be garbage-collected mid-flight.
        task = asyncio.ensure_future(self._serve(transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername") or ("?", 0)
        address = str(peer[0])
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            tls_transport = await loop.start_tls(
                transport,
                protocol,
                self._context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            if isinstance(exc, ConnectionAbortedError):  # asyncio's handshake timeout
                exc = TimeoutError(str(exc))
            reason = describe_handshake_failure(exc, peer="the switch")
            self.refusals.record(address, reason)
            log.warning("OpenFlow TLS from %s refused: %s", address, reason)
            transport.abort()
            return
        if tls_transport is None:  # closed while shaking hands
            transport.abort()
            return
        writer = asyncio.StreamWriter(tls_transport, protocol, reader, loop)
        self.refusals.accepted(address)
        names = peer_names(writer.get_extra_info("peercert"))
        # os-ken sees the connection come from this relay: say who it really is.
        log.info("OpenFlow TLS from %s accepted (%s)", address, ", ".join(names))
        try:
            backend_reader, backend_writer = await asyncio.open_connection(*self.backend)
        except OSError as exc:
            log.warning(
                "OpenFlow TLS from %s: cannot reach os-ken at %s: %s", address, self.backend, exc
            )
            writer.transport.abort()
            return
        pipes = [
            asyncio.ensure_future(_pipe(reader, backend_writer)),
            asyncio.ensure_future(_pipe(backend_reader, writer)),
        ]
        try:
            # Either side closing ends the connection: os-ken sees the switch go,
            # the switch sees os-ken drop it (e.g. after unanswered echoes).
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            # Graceful: what one side said last (an error, a close) still reaches the other.
            for end in (writer, backend_writer):
                end.close()


class _Accepted(asyncio.Protocol):
    """A new TCP connection: nothing is read before the TLS handshake takes it over.

    NOTE: asyncio.start_server + StreamWriter.start_tls loses a ClientHello that
    arrived before start_tls (the stream had already buffered it), and the
    handshake then hangs; pausing reading in connection_made avoids that."""

    def __init__(self, spawn: Callable[[asyncio.Transport], None]) -> None:
        self._spawn = spawn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self._spawn(transport)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
