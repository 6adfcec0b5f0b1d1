"""The controller as a whole: watch the desired-state revision, run one agent per host.

SQL is the source of truth. A watcher is woken by every commit of desired state
(PostgreSQL LISTEN/NOTIFY; in-process on SQLite; a slow safety poll besides); it
loads the rows changed since the last revision it read (everything at start and
on a periodic resync) and hands the snapshot to every host agent, waking only the
agents whose host the change can affect (`pipeline.affected`), creating and
stopping agents as hosts come and go. os-ken events
are routed to the agent whose datapath id they carry.

Load-balancer backend health is observed state, not desired state: the health
service's verdicts are overlaid on the last snapshot, which is handed to the
agents again at once, so a health flip recomputes the flows without waiting for
a revision. The verdict is recorded in SQL (without a revision bump) only once
every agent has finished a pass on it: what the API shows is on the switches.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

from controller import metrics
from controller.core import dhcp, gc_policy, probes
from controller.core.health import with_health
from controller.core.mastership import MastershipStore, ReplicaInfo, controller_targets
from controller.core.model import (
    BackendHealthUpdate,
    HostSpec,
    Snapshot,
    SnapshotChange,
    SnapshotUpdate,
    StateStore,
)
from controller.core.pipeline.affected import EVERY_HOST, DependencyIndex
from controller.core.pipeline.tables import TABLE_DHCP, TABLE_LB, TABLE_LB_CT
from controller.core.port_moves import PendingMove, held_snapshot, moves_in
from controller.health_service import HealthService
from controller.host_agent import (
    ControllerConfig,
    HostAgent,
    controller_target_for,
    datapath_id_for,
    relay_path_for,
)
from controller.openflow.app import start_openflow_controller
from controller.openflow.channel import SwitchChannel
from controller.openflow.relay import UnixToTcpRelay
from controller.replication import ReplicaCoordinator

log = logging.getLogger(__name__)

PacketInHandler = Callable[[str, int, int, int, bytes], None]

# How long the other hosts keep a moved port where it was, at most, waiting for its
# destination to confirm it (a destination that never does must not hold it forever).
MOVE_CONFIRM_TIMEOUT = 10.0

# A change of ports wakes the hosts they are bound to first; the other hosts it affects
# pass once those have (or after this long at most): the port's own switch, whose
# confirmation makes it ACTIVE (as OVN's ovn-installed), then commits without seven
# others competing for the CPU (and the GIL). Traffic the others would send towards
# the port has nowhere to go on its host before that anyway.
OWNERS_FIRST_MAX_DELAY = 0.1
# The other hosts then pass this many at a time (each waits its turn briefly, see
# HostAgent.run_pass): fewer threads handing the GIL around, so the API thread that
# answers the ACTIVE port's waiters is not queued behind all of them.
FOLLOWERS_AT_ONCE = 1

# How long the collector's freeze after a switch connects waits for the pass after it.
FREEZE_AFTER_TIMEOUT = 30.0
FREEZE_MIN_INTERVAL = 60.0

# How long a health verdict waits for the agents before it is recorded anyway (a
# switch that is down never finishes a pass that changes anything).
HEALTH_APPLY_TIMEOUT = 5.0

_PassTickets = list[tuple[HostAgent, int]]


class FabricController:
    def __init__(
        self,
        store: StateStore,
        config: ControllerConfig,
        *,
        mastership: MastershipStore | None = None,
        replica: ReplicaInfo | None = None,
        mastership_poll_interval: float = 0.15,
        mastership_grace: float = 0.5,
    ) -> None:
        """Alone (no `mastership`), this process masters every switch. With a
        mastership store and this process's `replica` registration, it shares the
        switches with the other live replicas (see controller.replication)."""
        self._store = store
        self._config = config
        self._lock = threading.Lock()
        self._replicas: tuple[ReplicaInfo, ...] = ()
        self._coordinator: ReplicaCoordinator | None = None
        if mastership is not None:
            if replica is None:
                raise ValueError("a replicated controller needs its replica registration")
            self._coordinator = ReplicaCoordinator(
                mastership,
                replica,
                host_ids=self._host_ids,
                on_master=lambda host_id, generation: self._set_master(host_id, generation),
                on_slave=lambda host_id: self._set_master(host_id, None),
                on_replicas=self._replicas_changed,
                poll_interval=mastership_poll_interval,
                grace=mastership_grace,
            )
        self._agents: dict[str, HostAgent] = {}
        self._by_dpid: dict[int, HostAgent] = {}
        self._relays: dict[Path, UnixToTcpRelay] = {}
        self._stop = threading.Event()
        self._watcher = DesiredStateWatcher(
            store, config, on_update=self._apply_snapshot, on_idle=self._sync_stored_relays
        )
        self._stop_openflow: Callable[[], None] | None = None
        self._unknown_dpids: set[int] = set()
        self._frozen_at: dict[str, float] = {}  # os-ken's thread only; see switch_connected
        self.packet_in_handlers: list[PacketInHandler] = [
            self._load_balancer_packet_in,
            self._dhcp_packet_in,
        ]
        # The last snapshot read from SQL, before the health overlay; dispatches
        # are serialised so the agents always end with the newest of both.
        self._stored_snapshot: Snapshot | None = None
        # Which hosts a change can affect (only the watcher thread uses it).
        self._dependencies = DependencyIndex()
        self._dispatch_lock = threading.Lock()
        self._followers = threading.Semaphore(FOLLOWERS_AT_ONCE)  # see _run_after
        self._exported_backends: set[tuple[str, str]] = set()  # under _dispatch_lock
        # Ports moving between hosts, until their destination confirms them: the other
        # hosts keep them where they were meanwhile (under _dispatch_lock; port_moves).
        self._moves: dict[str, PendingMove] = {}
        self._health = HealthService(
            send=self._send_frame,
            send_confirmed=self._send_frame_confirmed,
            on_change=self._health_changed,
            probes_from=None if self._coordinator is None else self._masters,
        )
        # Verdicts wait for the agents on their own thread: the health service and
        # os-ken's thread (probe replies) must never block on a reconcile pass.
        self._health_records: queue.Queue[
            tuple[_PassTickets, Sequence[BackendHealthUpdate]] | None
        ] = queue.Queue()
        self._health_recorder = threading.Thread(
            target=self._record_health, name="lb-health-record", daemon=True
        )

    def start(self) -> None:
        self._stop_openflow = start_openflow_controller(
            self,
            host=self._config.openflow_listen_host,
            port=self._config.openflow_port,
            tls=self._config.openflow_tls(),
        )
        self._watcher.start()
        self._health_recorder.start()
        self._health.start()
        if self._coordinator is not None:
            self._coordinator.start()

    def stop(self) -> None:
        if self._coordinator is not None:
            self._coordinator.stop()  # our switches go to the others at once
        self._stop.set()
        self._watcher.stop()
        self._health.stop()
        self._health_records.put(None)
        self._health_recorder.join(timeout=HEALTH_APPLY_TIMEOUT + 1)
        with self._lock:
            agents = list(self._agents.values())
            relays = list(self._relays.values())
            self._agents.clear()
            self._by_dpid.clear()
            self._relays.clear()
        for agent in agents:
            agent.stop()
        for relay in relays:
            relay.close()
        if self._stop_openflow is not None:
            self._stop_openflow()

    def poke(self) -> None:
        """Check for changes now instead of at the next safety poll."""
        self._watcher.poke()

    def _sync_stored_relays(self) -> None:
        # A host's run directory may appear after the host was registered.
        with self._dispatch_lock:
            snapshot = self._stored_snapshot
        if snapshot is not None:
            self._sync_relays(snapshot)

    # ---- desired state -------------------------------------------------------------------

    def _apply_snapshot(self, update: SnapshotUpdate) -> None:
        snapshot, change = update.snapshot, update.change
        wanted = {h.id: h for h in snapshot.hosts}
        with self._lock:
            gone = [a for hid, a in self._agents.items() if hid not in wanted]
            for agent in gone:
                del self._agents[agent.host.id]
                self._by_dpid.pop(agent.datapath_id, None)
            new = []
            for host_id, host in wanted.items():
                if host_id not in self._agents:
                    agent = HostAgent(
                        host,
                        config=self._config,
                        store=self._store,
                        controller_targets=None if self._coordinator is None else self._targets,
                    )
                    self._agents[host_id] = agent
                    self._by_dpid[agent.datapath_id] = agent
                    new.append(agent)
        self._sync_relays(snapshot)
        for agent in gone:
            log.info("host %s removed", agent.host.name)
            agent.stop()
        for agent in new:
            log.info("host %s added (datapath %016x)", agent.host.name, agent.datapath_id)
            agent.start()
        if change is None:
            self._dependencies.reset(snapshot)
            affected = EVERY_HOST
        else:
            affected = self._dependencies.affected_hosts(change)
        if change is None or _touches_load_balancers(snapshot, change):
            self._health.update(snapshot)
        moves = self._note_moves(change)
        self._dispatch(snapshot, affected, change)
        if moves:
            threading.Thread(
                target=self._confirm_moves, args=(moves,), name="port-moves", daemon=True
            ).start()

    # ---- ports moving between hosts (live migration) -------------------------------------

    def _note_moves(self, change: SnapshotChange | None) -> dict[str, PendingMove]:
        """Start holding the ports `change` moves; forget holds its other changes end."""
        with self._dispatch_lock:
            if change is None:  # a full load: no before to hold
                self._moves.clear()
                return {}
            moves, others = moves_in(change)
            for port_id in others:
                self._moves.pop(port_id, None)
            self._moves.update(moves)
            return moves

    def _confirm_moves(self, moves: dict[str, PendingMove]) -> None:
        """Once each destination reports its moved port ACTIVE (its flows confirmed on the
        switch), or after MOVE_CONFIRM_TIMEOUT, every host follows."""
        started = time.monotonic()
        deadline = started + MOVE_CONFIRM_TIMEOUT
        for move in moves.values():
            with self._lock:
                agent = self._agents.get(move.destination)
            while (
                agent is not None
                and not agent.port_active(move.after)
                and time.monotonic() < deadline
                and not self._stop.is_set()
            ):
                time.sleep(0.005)
        with self._dispatch_lock:
            for port_id, move in moves.items():
                if self._moves.get(port_id) is move:
                    del self._moves[port_id]
        for move in moves.values():
            log.info(
                "port %s moved to host %s: confirmed there after %.0f ms, every host follows",
                move.after.id,
                move.destination,
                (time.monotonic() - started) * 1000,
                extra={"port_id": move.after.id},
            )
        self._dispatch()

    def _dispatch(
        self,
        stored: Snapshot | None = None,
        affected: frozenset[str] | None = EVERY_HOST,
        change: SnapshotChange | None = None,
    ) -> _PassTickets:
        """Hand every agent the stored snapshot with the observed backend health, and
        wake those it may affect (`affected`; the others take it with their next
        pass) with what changed (None: unknown); returns each woken agent's number
        of the first pass on it."""
        with self._dispatch_lock:
            if stored is not None:
                self._stored_snapshot = stored
            snapshot = self._stored_snapshot
            if snapshot is None:
                return []
            effective = with_health(snapshot, self._health.health())
            self._export_backend_health(effective)
            with self._lock:
                agents = list(self._agents.values())
            owners = _owners(change)
            tickets: _PassTickets = []
            first: _PassTickets = []
            then: list[HostAgent] = []
            for agent in agents:
                wake = affected is EVERY_HOST or agent.host.id in affected
                now = wake and (not owners or agent.host.id in owners)
                number = agent.update(
                    held_snapshot(effective, self._moves, agent.host.id), wake=now, change=change
                )
                if wake:
                    tickets.append((agent, number))
                    if now:
                        first.append((agent, number))
                    else:
                        then.append(agent)
        if then:
            if first:
                threading.Thread(
                    target=_run_after,
                    args=(first, then, self._followers),
                    name="owners-first",
                    daemon=True,
                ).start()
            else:
                for agent in then:
                    agent.run_pass()
        return tickets

    def _export_backend_health(self, effective: Snapshot) -> None:
        """The health the flows follow, as `ovs_fabric_backend_healthy`; deleted backends'
        series go."""
        exported = {}
        for lb in effective.load_balancers:
            for backend in lb.backends:
                state = -1 if backend.health_unknown is not None else int(backend.healthy)
                exported[(lb.id, f"{backend.ip}:{backend.port}")] = state
        for labels, state in exported.items():
            metrics.BACKEND_HEALTHY.labels(*labels).set(state)
        for labels in self._exported_backends - exported.keys():
            metrics.BACKEND_HEALTHY.remove(*labels)
        self._exported_backends = set(exported)

    # ---- load balancers: health and rejections -------------------------------------------

    def _health_changed(self, updates: Sequence[BackendHealthUpdate]) -> None:
        # Only observed health changed: no host's ports, no host record.
        self._health_records.put((self._dispatch(change=SnapshotChange()), updates))

    def _record_health(self) -> None:
        while (item := self._health_records.get()) is not None:
            passes, updates = item
            deadline = time.monotonic() + HEALTH_APPLY_TIMEOUT
            for agent, number in passes:
                agent.wait_passed(number, timeout=max(0.0, deadline - time.monotonic()))
            try:
                self._store.record_backend_health(updates)
            except Exception:  # the flows already follow; SQL catches up on the next change
                log.exception("recording backend health failed")

    def _send_frame(self, host_id: str, interface: str, frame: bytes) -> bool:
        with self._lock:
            agent = self._agents.get(host_id)
        return agent is not None and agent.send_frame(interface, frame)

    def _send_frame_confirmed(
        self, host_id: str, interface: str, frame: bytes
    ) -> Future[bytes] | None:
        with self._lock:
            agent = self._agents.get(host_id)
        return None if agent is None else agent.send_frame_confirmed(interface, frame)

    def _load_balancer_packet_in(
        self, host_id: str, in_port: int, table_id: int, cookie: int, data: bytes
    ) -> None:
        if table_id == TABLE_LB:  # a backend answering a health probe sent from its VIP
            self._health.probe_reply(data)
        elif table_id == TABLE_LB_CT:  # a new connection to a VIP without usable backend
            answer = probes.rejection(data)
            with self._lock:
                agent = self._agents.get(host_id)
            if answer is not None and agent is not None:
                agent.send_to_port(in_port, answer)

    # ---- DHCP ------------------------------------------------------------------------------

    def _dhcp_packet_in(
        self, host_id: str, in_port: int, table_id: int, cookie: int, data: bytes
    ) -> None:
        """A VM's DHCP client message (table dhcp): answered from the desired state, by
        packet-out to the port it came from only."""
        if table_id != TABLE_DHCP:
            return
        with self._lock:
            agent = self._agents.get(host_id)
        snapshot = self._stored_snapshot
        interface = None if agent is None else agent.interface_at(in_port)
        if agent is None or snapshot is None or interface is None:
            return
        lease = dhcp.lease_for(snapshot, host_id, interface)
        reply = None if lease is None else dhcp.answer(data, lease)
        if reply is not None:
            agent.send_to_port(in_port, reply)

    # ---- replicas ------------------------------------------------------------------------

    def _host_ids(self) -> list[str]:
        with self._lock:
            return list(self._agents)

    def _set_master(self, host_id: str, generation: int | None) -> None:
        with self._lock:
            agent = self._agents.get(host_id)
            stored = self._stored_snapshot
        if agent is not None:
            agent.set_master(generation)
        if stored is not None:
            self._health.update(stored)  # probes follow the switches we master

    def _masters(self, host_id: str) -> bool:
        with self._lock:
            agent = self._agents.get(host_id)
        return agent is not None and agent.is_master

    def _replicas_changed(self, replicas: tuple[ReplicaInfo, ...]) -> None:
        with self._lock:
            self._replicas = replicas
            agents = list(self._agents.values())
        for agent in agents:
            agent.wake()  # masters rewrite their switch's controller targets

    def _targets(self, host: HostSpec) -> tuple[str, ...]:
        """Every live replica's controller target for `host` (ours included)."""
        relay = relay_path_for(host, self._config.relay_socket)
        with self._lock:
            replicas = self._replicas
        return controller_targets(
            None if relay is None else str(relay.parent),
            replicas,
            own=controller_target_for(host, self._config),
        )

    def _sync_relays(self, snapshot: Snapshot) -> None:
        name = self._config.relay_socket
        wanted = {p for p in (relay_path_for(h, name) for h in snapshot.hosts) if p is not None}
        target = (self._config.openflow_listen_host, self._config.openflow_port)
        with self._lock:
            for path in set(self._relays) - wanted:
                self._relays.pop(path).close()
            for path in wanted - set(self._relays):
                if not path.parent.is_dir():
                    continue  # the host's run directory is not there (yet); retried next revision
                relay = UnixToTcpRelay(path, target)
                try:
                    relay.start()
                except OSError as exc:
                    log.warning("cannot listen on %s: %s", path, exc)
                    continue
                self._relays[path] = relay

    # ---- SwitchEventSink (os-ken's event thread) --------------------------------------

    def _agent(self, datapath_id: int) -> HostAgent | None:
        with self._lock:
            agent = self._by_dpid.get(datapath_id)
        if agent is None and datapath_id not in self._unknown_dpids:
            self._unknown_dpids.add(datapath_id)
            log.warning("switch %016x is not a registered host; ignoring it", datapath_id)
        return agent

    def switch_connected(
        self, datapath_id: int, channel: SwitchChannel, ports: dict[str, int]
    ) -> None:
        agent = self._agent(datapath_id)
        if agent is not None:
            agent.switch_connected(channel, ports)
            # Its first pass computes and installs everything: a freeze after it (once a
            # minute per host at most: a flapping switch must not pin garbage each time).
            now, last = time.monotonic(), self._frozen_at.get(agent.host.id)
            if last is None or now - last >= FREEZE_MIN_INTERVAL:
                self._frozen_at[agent.host.id] = now
                threading.Thread(
                    target=_freeze_after,
                    args=([(agent, agent.next_pass())],),
                    name="gc-freeze",
                    daemon=True,
                ).start()

    def switch_disconnected(self, datapath_id: int, channel: SwitchChannel) -> None:
        agent = self._agent(datapath_id)
        if agent is not None:
            agent.switch_disconnected(channel)

    def ports_changed(self, datapath_id: int, ports: dict[str, int]) -> None:
        agent = self._agent(datapath_id)
        if agent is not None:
            agent.ports_changed(ports)

    def packet_in(
        self, datapath_id: int, *, in_port: int, table_id: int, cookie: int, data: bytes
    ) -> None:
        agent = self._agent(datapath_id)
        if agent is None or not agent.is_master:
            return  # a replica that does not master the switch does not act on it
        for handler in self.packet_in_handlers:
            handler(agent.host.id, in_port, table_id, cookie, data)


class DesiredStateWatcher:
    """Follows the desired state: loads what changed whenever a commit is announced
    (`StateStore.watch_changes`), or at the latest every `safety_poll_interval`; the
    whole of it at start, after a failed read and every `snapshot_resync_interval`.
    Calls `on_update` with each new snapshot and its change, `on_idle` when a check
    found nothing new; both on its own thread."""

    def __init__(
        self,
        store: StateStore,
        config: ControllerConfig,
        *,
        on_update: Callable[[SnapshotUpdate], None],
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._config = config
        self._on_update = on_update
        self._on_idle = on_idle
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._run, name="revision-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def poke(self) -> None:
        self._poke.set()

    def _run(self) -> None:
        loader = self._store.snapshot_loader()
        # Woken at once by every commit (NOTIFY / in-process); the timeout is only
        # the safety poll for a notification lost while the listener reconnects.
        stop_watching = self._store.watch_changes(self._poke.set)
        revision: int | None = None
        failing_since: float | None = None
        full = True
        last_full = time.monotonic()
        try:
            while not self._stop.is_set():
                # Cleared before reading: a commit announced from now on wakes the next round.
                self._poke.clear()
                try:
                    if time.monotonic() - last_full >= self._config.snapshot_resync_interval:
                        full = True
                    update = loader.load(full=full)
                    if full:
                        full, last_full = False, time.monotonic()
                    if update is not None:
                        revision = update.snapshot.revision
                        self._on_update(update)
                    else:
                        self._on_idle()
                except Exception:  # a database outage must not end the watcher
                    # The switches keep the flows of the last snapshot meanwhile. Said
                    # once, not ten times a second for as long as the outage lasts.
                    if failing_since is None:
                        failing_since = time.monotonic()
                        log.exception("loading desired state failed; retrying until it works")
                    # Once it works again, everything is read and compared afresh: what
                    # failed to reach SQL meanwhile (health verdicts) is written then.
                    full = True
                else:
                    if failing_since is not None:
                        log.info(
                            "desired state readable again after %.1f s (revision %s)",
                            time.monotonic() - failing_since,
                            revision,
                        )
                        failing_since = None
                # While the database fails, retry at the pace of the old poll.
                self._poke.wait(
                    timeout=self._config.revision_poll_interval
                    if failing_since is not None
                    else self._config.safety_poll_interval
                )
        finally:
            stop_watching()


def _owners(change: SnapshotChange | None) -> frozenset[str]:
    """The hosts the ports `change` changes are bound to (before and after)."""
    if change is None:
        return frozenset()
    return frozenset(
        port.host_id for pair in change.ports for port in pair if port is not None and port.host_id
    )


def _run_after(first: _PassTickets, then: list[HostAgent], gate: threading.Semaphore) -> None:
    """Wake `then` once every agent of `first` finished its pass (at most
    OWNERS_FIRST_MAX_DELAY), to pass through `gate`."""
    deadline = time.monotonic() + OWNERS_FIRST_MAX_DELAY
    for agent, number in first:
        agent.wait_passed(number, timeout=max(0.0, deadline - time.monotonic()))
    for agent in then:
        agent.run_pass(gate)


def _freeze_after(tickets: _PassTickets) -> None:
    """Once the pass after a switch (re)connected is done (rare: hosts are added and
    switches restarted seldom, so what a freeze may pin is bounded), move every object
    alive into the collector's permanent generation (`gc.freeze`). Measured (8 hosts, port
    activation bench): the service tracks ~300k objects, mostly the imported libraries
    (os-ken, SQLAlchemy, FastAPI, ovsdbapp) and the computed flows, and a full
    collection scanned them all: 60-340 ms with every thread stopped, 1-3 times per 40
    activations, each landing on an activation in flight. Frozen, they are skipped;
    refcounting still frees them (flows hold no cycles). Once this ran, the survivors
    of a later bulk compute or install join them (controller.core.gc_policy)."""
    deadline = time.monotonic() + FREEZE_AFTER_TIMEOUT
    for agent, number in tickets:
        agent.wait_passed(number, timeout=max(0.0, deadline - time.monotonic()))
    gc_policy.freeze_survivors()


def _touches_load_balancers(snapshot: Snapshot, change: SnapshotChange) -> bool:
    """Whether `change` can change the health checks: a load balancer, a host, or a
    port in a network with a load balancer (a backend's owner) changed."""
    if change.load_balancers or change.hosts:
        return True
    if not change.ports:
        return False
    lb_networks = {lb.network_id for lb in snapshot.load_balancers}
    return any(
        port is not None and port.network_id in lb_networks
        for pair in change.ports
        for port in pair
    )


__all__ = ["ControllerConfig", "DesiredStateWatcher", "FabricController", "datapath_id_for"]
