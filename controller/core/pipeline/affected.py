"""Which hosts a change of desired state can affect: the others are not woken at all.

A host's pass depends on (see `engine.DatapathComputer` and the host agent):
- its own record and every other host's (paths: uplink, tunnels; OVSDB tunnels);
- the ports bound to it (OVSDB VM ports, port status reports);
- every network in which a port is bound to it, with all of that network's ports
  and load balancers (the network's flows and groups on its datapath);
- whether any network's segment is invalid or shared: the computer refuses the
  whole snapshot then, on every host.
So a change of a port, network or load balancer affects the hosts with a port bound
in its network (before or after the change), and the hosts the port is bound to;
a change of a host, or of a network's segment validity, affects every host.

`DependencyIndex` keeps network -> hosts with bound ports (counted), and the owners of
each segment, up to date from each `SnapshotChange`: O(change), not O(snapshot).
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from controller.core.model import NetworkSpec, PortSpec, Snapshot, SnapshotChange
from controller.core.pipeline.context import network_metadata
from controller.core.pipeline.tables import PipelineError

__all__ = ["EVERY_HOST", "DependencyIndex"]

# The answer for a change that may affect any host.
EVERY_HOST: Final = None

_INVALID: Final = -1  # the segment key of a network whose segment is refused


class DependencyIndex:
    """Pure; fed the snapshots' changes in order by one reader."""

    def __init__(self) -> None:
        self._hosts_in: dict[str, Counter[str]] = {}  # network id -> host id -> bound ports
        self._segment_of: dict[str, int] = {}  # network id -> metadata (or _INVALID)
        self._segment_owners: Counter[int] = Counter()

    def reset(self, snapshot: Snapshot) -> None:
        """Forget everything; index `snapshot` (after a full load)."""
        self._hosts_in.clear()
        self._segment_of.clear()
        self._segment_owners.clear()
        for network in snapshot.networks:
            self._add_network(network)
        for port in snapshot.ports:
            self._add_port(port)

    def affected_hosts(self, change: SnapshotChange) -> frozenset[str] | None:
        """The ids of the hosts `change` can affect (EVERY_HOST: None, any of them), and
        the index brought up to date with it."""
        every = bool(change.hosts)
        hosts: set[str] = set()
        for before, after in change.networks:
            for network in (before, after):
                if network is not None:
                    hosts.update(self._hosts_in.get(network.id, ()))
            if before is not None:
                every = every or self._troubled(before)  # it was, with `before` counted
                self._drop_network(before)
            if after is not None:
                self._add_network(after)
                every = every or self._troubled(after)
        for before_port, after_port in change.ports:
            for port in (before_port, after_port):
                if port is not None:
                    hosts.update(self._hosts_in.get(port.network_id, ()))
                    if port.host_id is not None:
                        hosts.add(port.host_id)
            if before_port is not None:
                self._drop_port(before_port)
            if after_port is not None:
                self._add_port(after_port)
                hosts.update(self._hosts_in.get(after_port.network_id, ()))
        for before_lb, after_lb in change.load_balancers:
            for lb in (before_lb, after_lb):
                if lb is not None:
                    hosts.update(self._hosts_in.get(lb.network_id, ()))
        return EVERY_HOST if every else frozenset(hosts)

    def hosts_in(self, network_id: str) -> frozenset[str]:
        return frozenset(self._hosts_in.get(network_id, ()))

    # ---- the index ------------------------------------------------------------------

    def _troubled(self, network: NetworkSpec) -> bool:
        """Whether the network's segment is refused or shared with an indexed network."""
        segment = _segment(network)
        return segment == _INVALID or self._segment_owners[segment] > 1

    def _add_network(self, network: NetworkSpec) -> None:
        segment = _segment(network)
        self._segment_of[network.id] = segment
        self._segment_owners[segment] += 1

    def _drop_network(self, network: NetworkSpec) -> None:
        segment = self._segment_of.pop(network.id, None)
        if segment is not None:
            self._segment_owners[segment] -= 1
            if not self._segment_owners[segment]:
                del self._segment_owners[segment]

    def _add_port(self, port: PortSpec) -> None:
        if port.host_id is not None:
            self._hosts_in.setdefault(port.network_id, Counter())[port.host_id] += 1

    def _drop_port(self, port: PortSpec) -> None:
        if port.host_id is None:
            return
        hosts = self._hosts_in.get(port.network_id)
        if hosts is None or not hosts[port.host_id]:
            return
        hosts[port.host_id] -= 1
        if not hosts[port.host_id]:
            del hosts[port.host_id]
            if not hosts:
                del self._hosts_in[port.network_id]


def _segment(network: NetworkSpec) -> int:
    try:
        return network_metadata(network)
    except PipelineError:
        return _INVALID
