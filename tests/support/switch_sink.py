"""A SwitchEventSink for tests and benches that drive the OpenFlow controller directly:
it keeps each switch's current channel and ports, and waits for a switch to connect."""

from __future__ import annotations

import threading

from controller.openflow.channel import SwitchChannel


class SwitchChannels:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.channels: dict[int, SwitchChannel] = {}
        self.ports: dict[int, dict[str, int]] = {}

    def switch_connected(
        self, datapath_id: int, channel: SwitchChannel, ports: dict[str, int]
    ) -> None:
        with self._cond:
            self.channels[datapath_id] = channel
            self.ports[datapath_id] = ports
            self._cond.notify_all()

    def switch_disconnected(self, datapath_id: int, channel: SwitchChannel) -> None:
        with self._cond:
            if self.channels.get(datapath_id) is channel:
                del self.channels[datapath_id]

    def ports_changed(self, datapath_id: int, ports: dict[str, int]) -> None:
        with self._cond:
            self.ports[datapath_id] = ports
            self._cond.notify_all()

    def packet_in(self, datapath_id: int, **_: object) -> None:
        pass

    def wait(
        self, datapath_id: int, *, not_: SwitchChannel | None = None, timeout: float = 15
    ) -> SwitchChannel:
        """The switch's channel once it is connected (on another channel than `not_`)."""

        def ready() -> bool:
            channel = self.channels.get(datapath_id)
            return channel is not None and channel is not not_ and channel.connected

        with self._cond:
            if not self._cond.wait_for(ready, timeout=timeout):
                raise TimeoutError(f"switch {datapath_id:016x} did not connect")
            return self.channels[datapath_id]
