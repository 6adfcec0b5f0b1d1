"""The OpenFlow controller (os-ken + keepalive) in a child process, for tests.

os-ken keeps process-wide state, so a process runs one controller
(`start_openflow_controller` refuses a second); a test module that needs its
own, next to another module's in the same pytest worker, runs it here. The child
reports each switch connecting and disconnecting, and the keepalive's counters
on request.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from api.launcher import free_tcp_port


@dataclass(frozen=True)
class KeepaliveCounts:
    probes_sent: int
    declared_dead: int


def _serve(port: int, events: Any, commands: Connection) -> None:  # runs in the child
    from controller.openflow.app import FabricOpenFlowApp, start_openflow_controller
    from controller.openflow.channel import SwitchChannel

    channels: dict[int, SwitchChannel] = {}

    class Sink:
        def switch_connected(
            self, datapath_id: int, channel: SwitchChannel, ports: dict[str, int]
        ) -> None:
            channels[datapath_id] = channel
            events.put(("connected", datapath_id))

        def switch_disconnected(self, datapath_id: int, channel: SwitchChannel) -> None:
            events.put(("disconnected", datapath_id))

        def ports_changed(self, datapath_id: int, ports: dict[str, int]) -> None:
            pass

        def packet_in(self, datapath_id: int, **_: object) -> None:
            pass

    stop = start_openflow_controller(Sink(), host="127.0.0.1", port=port)
    keepalive = FabricOpenFlowApp.keepalive
    assert keepalive is not None
    events.put(("ready", 0))
    try:
        while True:
            command = commands.recv()
            if command == "counts":
                commands.send(KeepaliveCounts(keepalive.probes_sent, keepalive.declared_dead))
            elif command[0] == "allow_silence":  # as a bundle's commit does
                _, datapath_id, seconds = command
                channels[datapath_id].allow_silence(seconds)
                commands.send(None)
            else:
                return
    except EOFError:
        pass
    finally:
        stop()


class ChildController:
    """What the child reported, and its keepalive counters."""

    def __init__(self, port: int, events: Any, commands: Connection) -> None:
        self.port = port
        self._events = events
        self._commands = commands
        self._lock = threading.Lock()
        self.seen: list[tuple[str, int]] = []

    def _drain(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        self.seen.append(event)
        while True:
            try:
                self.seen.append(self._events.get_nowait())
            except queue.Empty:
                return

    def wait_for(self, event: tuple[str, int], *, after: int = 0, timeout: float = 15) -> int:
        """Index in `seen` of the first `event` at or after index `after`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for index in range(after, len(self.seen)):
                    if self.seen[index] == event:
                        return index
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {event} within {timeout} s; saw {self.seen[after:]}")
                self._drain(min(left, 0.2))

    def allow_silence(self, datapath_id: int, seconds: float) -> None:
        """The switch's channel grants it `seconds` of silence, as a bundle commit does."""
        with self._lock:
            self._commands.send(("allow_silence", datapath_id, seconds))
            self._commands.recv()

    def counts(self) -> KeepaliveCounts:
        with self._lock:
            self._commands.send("counts")
            counts: KeepaliveCounts = self._commands.recv()
            return counts


@contextmanager
def child_controller() -> Iterator[ChildController]:
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    ours, theirs = context.Pipe()
    port = free_tcp_port()
    process = context.Process(target=_serve, args=(port, events, theirs), daemon=True)
    process.start()
    controller = ChildController(port, events, ours)
    try:
        controller.wait_for(("ready", 0), timeout=60)
        yield controller
    finally:
        ours.close()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
