"""One worker per registered host: makes that host's OVS match the desired state.

A pass is level-triggered and idempotent: ensure the integration bridge, uplink,
tunnels and VM ports over OVSDB, then (when the switch is connected) compute the
datapath's flows from the latest snapshot and reconcile them. Passes run on a
change (new snapshot, switch (re)connect, port change) and every
`reconcile_interval` seconds, so drift and missed events are repaired by the
next comparison. A host that is down never blocks another host's worker.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from controller import metrics
from controller.conntrack_flush import UdpPinFlusher
from controller.core import ofmsg
from controller.core.flows import OFPP_CONTROLLER, Flow, Output
from controller.core.model import (
    DatapathView,
    HostSpec,
    HostStatus,
    PortSpec,
    PortStatus,
    PortStatusUpdate,
    Snapshot,
    SnapshotChange,
    StateStore,
)
from controller.core.pipeline import DatapathComputer, DatapathConfig, PipelineError
from controller.core.pipeline.context import tunnel_interface_name
from controller.openflow.channel import OpenFlowError, SwitchChannel, SwitchDisconnected
from controller.openflow.tls_front import REFUSALS, TlsListener
from controller.ovsdb import BridgeIntent, OvsdbClient, OvsdbConflict, OvsdbUnavailable
from controller.reconcile import DatapathSync
from controller.tls import TlsFiles

log = logging.getLogger(__name__)

RELAY_SOCKET_NAME = "ovs-fabric-ofp.sock"
# No switch: no port of this host is realized (one object, so passes can tell "unchanged").
_NOTHING_REALIZED: frozenset[str] = frozenset()
# How long a pass that plugged a VM's interface waits for the switch to announce its
# OpenFlow port, so that the same pass installs the port's flows (instead of reporting
# it DOWN, then a second pass). An interface OVS cannot open ends the wait at once.
INTERFACE_WAIT_SECONDS = 1.0
# A change of only the flow and group counts is written at most this often per host:
# every host of a network writes one after each change of it, and on SQLite these
# writes queue for the one write lock with the port statuses and the API's writes.
COUNTS_REPORT_INTERVAL = 2.0
# How long a pass waits for its turn through a gate shared with other agents (run_pass).
GATE_WAIT_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    integration_bridge: str = "br-int"
    datapath_type: str = "system"
    openflow_listen_host: str = "127.0.0.1"
    openflow_port: int = 6653
    openflow_advertise: str | None = None  # controller target for hosts reached over tcp/ssl
    reconcile_interval: float = 10.0
    # Commits wake the controller (LISTEN/NOTIFY, in-process on SQLite); it also checks
    # every safety_poll_interval, every revision_poll_interval while the database
    # fails, and reads the whole desired state again every snapshot_resync_interval.
    revision_poll_interval: float = 0.1
    safety_poll_interval: float = 1.0
    snapshot_resync_interval: float = 300.0
    ovsdb_timeout: float = 5.0
    # After a (re)start, a switch keeps forwarding with the flows it has; give it
    # this long to reconnect before its ports are reported DOWN.
    connect_grace: float = 10.0
    # Mutual TLS: all three files or none (see `tls_files`).
    tls_private_key: Path | None = None
    tls_certificate: Path | None = None
    tls_ca_certificate: Path | None = None
    openflow_tls_listen_host: str = "127.0.0.1"
    openflow_tls_port: int = 6654
    require_tls: bool = False  # hosts with a tcp: OVSDB remote are refused
    # This process's relay socket in a local host's run directory; each controller
    # replica listens on its own (see controller.replication).
    relay_socket: str = RELAY_SOCKET_NAME

    def tls_files(self) -> TlsFiles | None:
        if self.tls_private_key is None or self.tls_certificate is None:
            return None
        if self.tls_ca_certificate is None:
            return None
        return TlsFiles(self.tls_private_key, self.tls_certificate, self.tls_ca_certificate)

    def openflow_tls(self) -> TlsListener | None:
        files = self.tls_files()
        if files is None:
            return None
        return TlsListener(files, self.openflow_tls_listen_host, self.openflow_tls_port)


def plugged_by_us(before: dict[str, int], after: dict[str, int], plugging: set[str]) -> bool:
    """Whether a switch's ports went from `before` to `after` only by gaining some of the
    interfaces in `plugging` (none gone, none renumbered)."""
    return after.keys() - before.keys() <= plugging and not before.items() - after.items()


def only_counts_differ(status: HostStatus, last: HostStatus | None) -> bool:
    """Whether `status` differs from the `last` one written only in the flow and group
    counts."""
    return last is not None and last == dataclasses.replace(
        status, flow_count=last.flow_count, group_count=last.group_count
    )


def datapath_id_for(host_id: str) -> int:
    """A stable, non-zero datapath id derived from the host's UUID (set through OVSDB)."""
    value = int(uuid.UUID(host_id).hex[:16], 16) & 0x0000FFFFFFFFFFFF
    return value or 1


def relay_path_for(host: HostSpec, socket_name: str = RELAY_SOCKET_NAME) -> Path | None:
    """The unix socket the service listens on for a host whose OVSDB is a local socket."""
    if not host.ovsdb_remote.startswith("unix:"):
        return None
    return Path(host.ovsdb_remote.removeprefix("unix:")).parent / socket_name


def controller_target_for(host: HostSpec, config: ControllerConfig) -> str | None:
    """unix: (our relay) for a host on this machine; else the advertised address, as
    `ssl:ADDRESS:openflow_tls_port` when TLS is configured (an `ssl:` advertise is
    taken as it is, e.g. behind NAT)."""
    relay = relay_path_for(host, config.relay_socket)
    if relay is not None:
        return f"unix:{relay}"
    advertise = config.openflow_advertise
    if advertise is None or config.tls_files() is None or advertise.startswith("ssl:"):
        return advertise
    address = advertise.removeprefix("tcp:")
    if advertise.startswith("tcp:"):
        address = address.rpartition(":")[0]  # tcp:ADDRESS:PORT
    return f"ssl:{address}:{config.openflow_tls_port}"


def network_controller_target(config: ControllerConfig) -> str | None:
    """The controller target this process gives hosts reached over tcp:/ssl:."""
    return controller_target_for(HostSpec(id="", name="", ovsdb_remote="tcp:"), config)


def plaintext_remotes(host: HostSpec) -> list[str]:
    """The host's OVSDB remotes that cross a network without TLS (unix: is local)."""
    return [r for r in host.ovsdb_remote.split(",") if r.startswith("tcp:")]


def remote_address(host: HostSpec) -> str | None:
    """The IP address of the host's first network OVSDB remote ("ssl:IP:PORT"): where
    its switch is expected to connect from."""
    for remote in host.ovsdb_remote.split(","):
        scheme, _, rest = remote.partition(":")
        if scheme in ("ssl", "tcp") and ":" in rest:
            return rest.rpartition(":")[0].strip("[]")
    return None


class HostAgent:
    def __init__(
        self,
        host: HostSpec,
        *,
        config: ControllerConfig,
        store: StateStore,
        ovsdb_factory: Callable[[str], OvsdbClient] | None = None,
        controller_targets: Callable[[HostSpec], tuple[str, ...]] | None = None,
    ) -> None:
        self.host = host
        # Replicated (controller_targets given): this agent writes nothing, to OVSDB or
        # the switch, until `set_master` makes it the switch's master; it then claims
        # the switch with a role request carrying the generation before any flow-mod.
        self._replicated = controller_targets is not None
        self._controller_targets = controller_targets
        self._generation: int | None = None
        self._claimed: tuple[SwitchChannel, int] | None = None
        self.datapath_id = datapath_id_for(host.id)
        self._config = config
        self._store = store
        # The host's certificate must carry the name it is registered under.
        self._ovsdb_factory = ovsdb_factory or (
            lambda remote: OvsdbClient(
                remote,
                timeout=config.ovsdb_timeout,
                tls=config.tls_files(),
                peer_name=self.host.name,
            )
        )
        self._ovsdb = self._ovsdb_factory(host.ovsdb_remote)
        self._ovsdb_for = (host.ovsdb_remote, host.name)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._snapshot: Snapshot | None = None
        self._channel: SwitchChannel | None = None
        self._ofports: dict[str, int] = {}
        # Interfaces this worker is plugging; their port-status needs no OVSDB look nor
        # a new pass (the plugging pass waits for them). Notified on every port change.
        self._awaited: set[str] = set()
        self._gate: threading.Semaphore | None = None  # see run_pass
        self._ofports_changed = threading.Condition(self._lock)
        self._sync: DatapathSync | None = None
        self._pins: UdpPinFlusher | None = None  # with _sync: one per switch connection
        self._pins_repeat_at: float | None = None  # a flush to repeat then (monotonic)
        # Only the worker uses it: each pass recomputes the flows of what changed.
        self._computer = DatapathComputer(host.id)
        self._needs_read = False
        self._last_audit = 0.0
        self._started_at = time.monotonic()
        self._ever_connected = False
        self._wake_timer: threading.Timer | None = None
        self._reported_ports: dict[PortSpec, PortStatus] = {}
        self._reported_status: HostStatus | None = None
        self._host_reported_at = 0.0
        self._counts_timer: threading.Timer | None = None
        # What a pass must look at again besides the flows (see update and _ovsdb_due).
        self._ovsdb_dirty = True
        self._ovsdb_ensured_at = 0.0
        self._ports_dirty = True
        self._reported_realized: frozenset[str] | None = None
        self._switch_holds: tuple[int | None, int | None] = (None, None)  # flows, groups
        self._ovsdb_ok: bool | None = None
        self._last_error: str | None = None
        # Passes are numbered as they take a snapshot; `wait_passed` waits for one.
        self._passes_started = 0
        self._passes_finished = 0
        self._pass_finished = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name=f"host:{host.name}", daemon=True)

    # ---- inputs (any thread) -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._counts_timer is not None:
            self._counts_timer.cancel()
        self._wake.set()
        self._thread.join(timeout=10)
        self._ovsdb.close()
        with self._lock:
            if self._channel is not None:
                metrics.SWITCHES_CONNECTED.dec()
        metrics.forget_host(self.host.name)

    def update(
        self, snapshot: Snapshot, *, wake: bool = True, change: SnapshotChange | None = None
    ) -> int:
        """Hand in a new snapshot; returns the number of the first pass that works on
        it (or on a newer one), for `wait_passed`. `wake=False`: the snapshot changes
        nothing for this host (see `pipeline.affected`); the next pass takes it.
        `change`: what changed since the last snapshot (None: unknown), so a pass for a
        change that leaves this host's ports and the hosts alone skips its OVSDB
        intents and port reports (both O(ports bound here))."""
        here = self.host.id
        with self._lock:
            if (
                change is None
                or change.hosts
                or any(p is not None and p.host_id == here for pair in change.ports for p in pair)
            ):
                self._ovsdb_dirty = self._ports_dirty = True
            self._snapshot = snapshot
            host = snapshot.host(self.host.id)
            if host is not None:
                self.host = host
            # A pass under way took the previous snapshot; the next one takes this.
            first_pass = self._passes_started + 1
        if wake:
            self._wake.set()
        return first_pass

    def next_pass(self) -> int:
        """The number of the next pass to start, for `wait_passed`."""
        with self._lock:
            return self._passes_started + 1

    def wait_passed(self, number: int, timeout: float) -> bool:
        """Wait until pass `number` has finished (whatever it achieved); False on timeout."""
        with self._pass_finished:
            return self._pass_finished.wait_for(
                lambda: self._passes_finished >= number, timeout=timeout
            )

    def switch_connected(self, channel: SwitchChannel, ports: dict[str, int]) -> None:
        with self._lock:
            if self._channel is None:
                metrics.SWITCHES_CONNECTED.inc()
            metrics.SWITCH_CONNECTED.labels(self.host.name).set(1)
            self._channel = channel
            self._ofports = dict(ports)
            self._sync = DatapathSync(channel)
            self._pins = UdpPinFlusher(channel, timeout=self._sync.timeout)
            self._needs_read = True
            self._ever_connected = True
            self._ovsdb_dirty = self._ports_dirty = True
            grace = self._wake_timer
        if grace is not None:
            # The pass at the end of the connect grace would find the switch here: it
            # only costs a pass of every host started together, all at once.
            grace.cancel()
        self._wake.set()

    def switch_disconnected(self, channel: SwitchChannel) -> None:
        with self._lock:
            if self._channel is channel:
                self._channel = None
                self._sync = None
                self._pins = None
                metrics.SWITCHES_CONNECTED.dec()
                metrics.SWITCH_CONNECTED.labels(self.host.name).set(0)
            self._ovsdb_dirty = self._ports_dirty = True
        self._wake.set()

    def ports_changed(self, ports: dict[str, int]) -> None:
        with self._lock:
            before, self._ofports = self._ofports, dict(ports)
            if self._ofports == before:
                return  # e.g. a link went up: the flows follow the ofports only
            self._ofports_changed.notify_all()
            if plugged_by_us(before, self._ofports, self._awaited):
                return  # the pass under way plugged them and waits for them: it takes them
            self._ovsdb_dirty = True  # an interface came or went: look at them all again
        self._wake.set()

    def run_pass(self, gate: threading.Semaphore | None = None) -> None:
        """A pass now on what it was handed (an `update` that did not wake it). `gate`:
        a pass shared with other agents: this one waits its turn (at most
        GATE_WAIT_SECONDS, so a switch that hangs delays no other host for long)."""
        with self._lock:
            self._gate = gate
        self._wake.set()

    def wake(self) -> None:
        """A pass now, OVSDB intents included (e.g. the controller targets changed)."""
        with self._lock:
            self._ovsdb_dirty = True
        self._wake.set()

    @property
    def is_master(self) -> bool:
        return not self._replicated or self._generation is not None

    def set_master(self, generation: int | None) -> None:
        """Master the switch with this generation id (fencing token), or None: stop
        writing (another replica masters it, or we cannot know)."""
        with self._lock:
            if generation == self._generation:
                return
            self._generation = generation
            self._claimed = None
            self._needs_read = True
            # A new master reports everything again: the last one's view may differ.
            self._reported_ports = {}
            self._reported_status = None
            self._ovsdb_dirty = self._ports_dirty = True
        self._wake.set()

    def port_active(self, port: PortSpec) -> bool:
        """Whether this agent reported `port` (this binding of it) ACTIVE: its flows are
        confirmed on the switch."""
        return self._reported_ports.get(port) == "ACTIVE"

    def interface_at(self, ofport: int) -> str | None:
        """The name of the switch's port `ofport`, as the switch last reported it."""
        with self._lock:
            return next((name for name, no in self._ofports.items() if no == ofport), None)

    def send_frame(self, interface: str, frame: bytes) -> bool:
        """Packet-out `frame` straight to `interface` (load-balancer health probes and
        rejections); False when the switch is not connected or lacks the interface."""
        with self._lock:
            channel, ofport = self._channel, self._ofports.get(interface)
        return ofport is not None and self.send_to_port(ofport, frame, channel=channel)

    def send_frame_confirmed(self, interface: str, frame: bytes) -> Future[bytes] | None:
        """`send_frame` followed by a barrier: the future resolves once the switch has
        executed the packet-out (health probes: silence counts only then). None when
        nothing was sent."""
        with self._lock:
            channel, ofport = self._channel, self._ofports.get(interface)
        if channel is None or ofport is None:
            return None
        if not self.send_to_port(ofport, frame, channel=channel):
            return None
        try:
            return channel.barrier()
        except SwitchDisconnected:
            return None

    def send_to_port(
        self, ofport: int, frame: bytes, *, channel: SwitchChannel | None = None
    ) -> bool:
        if channel is None:
            with self._lock:
                channel = self._channel
        if channel is None or not self.is_master:
            return False
        # in_port CONTROLLER: the frame is the controller's own, it enters no table.
        message = ofmsg.packet_out(in_port=OFPP_CONTROLLER, actions=(Output(ofport),), data=frame)
        try:
            channel.send(message)
        except SwitchDisconnected:
            return False
        return True

    def _until_audit(self) -> float:
        """How long to sleep without a wake-up: until the next audit is due. A pass in
        between (a change) must not push the audit a whole interval further, or drift
        would wait up to two intervals; when the audit is overdue (the last pass could
        not reach the switch), a whole interval, as before."""
        interval = self._config.reconcile_interval
        remaining = self._last_audit + interval - time.monotonic()
        return remaining if 0 < remaining < interval else interval

    def _until_due(self) -> float:
        """How long to sleep without a wake-up: until the audit, or a conntrack flush to
        repeat, is due."""
        until = self._until_audit()
        if self._pins_repeat_at is not None:
            until = min(until, max(self._pins_repeat_at - time.monotonic(), 0.0))
        return until

    def _wake_later(self, delay: float) -> None:
        """The connect grace's wake-up (cancelled when the switch connects)."""
        self._wake_timer = _one_wake_up(self._wake_timer, delay, self._wake.set)

    # ---- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        # Every line this worker logs (reconcile.py's too) names its host.
        structlog.contextvars.bind_contextvars(host=self.host.name, host_id=self.host.id)
        while not self._stop.is_set():
            self._wake.wait(timeout=self._until_due())
            self._wake.clear()
            # Set again by a pass that leaves a flush to repeat; a pass that fails or
            # is skipped must not leave a deadline in the past (a worker spinning).
            self._pins_repeat_at = None
            if self._stop.is_set():
                return
            with self._lock:
                gate, self._gate = self._gate, None
            entered = gate is not None and gate.acquire(timeout=GATE_WAIT_SECONDS)
            with self._lock:
                snapshot = self._snapshot
                self._passes_started += 1
                number = self._passes_started
            try:
                if snapshot is not None:
                    self._pass(snapshot)
            except Exception as exc:  # a bug in one pass must not kill the host's worker
                log.exception("host %s: reconcile pass failed", self.host.name)
                # Shown on the host too: a pass that keeps failing is never silent.
                self._set_error(f"internal error: {type(exc).__name__}: {exc}")
                try:
                    self._report_host(openflow=self._channel is not None)
                except Exception as report_exc:
                    # The store may be what failed (a database outage): raised here it
                    # killed the worker for good, and the host was never reconciled
                    # again. The report is retried by the next pass (unchanged status).
                    log.warning(
                        "host %s: cannot report the failed pass: %s", self.host.name, report_exc
                    )
            finally:
                if entered:
                    assert gate is not None
                    gate.release()
                with self._pass_finished:
                    self._passes_finished = number
                    self._pass_finished.notify_all()

    def _pass(self, snapshot: Snapshot) -> None:
        if not self.is_master:
            return  # another replica masters this switch; ours stays a reader
        if self._channel is None and self._reported_status is not None:
            # A lost switch is reported before OVSDB is tried: its ovsdb-server may
            # be what hangs, and the API must show the loss at once.
            self._report_host(openflow=False)
        try:
            if self._ovsdb_due():
                try:
                    self._ensure_ovsdb(snapshot)
                except BaseException:
                    self._ovsdb_dirty = True
                    raise
            self._await_interfaces()
        finally:
            with self._lock:
                if self._awaited:  # the pass failed before its wait (a bug: logged)
                    self._awaited.clear()
                    self._ovsdb_dirty = True
        with self._lock:
            channel, sync, pins = self._channel, self._sync, self._pins
            ofports = dict(self._ofports)
            needs_read, self._needs_read = self._needs_read, False
        if channel is None or sync is None or pins is None:
            self._report_refused_switch()
            waiting = time.monotonic() - self._started_at < self._config.connect_grace
            if self._ever_connected or not waiting:
                self._report_ports(snapshot, None)
            else:
                self._wake_later(self._config.connect_grace)
            self._report_host(openflow=False)
            return
        started = time.perf_counter()
        ok = False
        try:
            ok = self._reconcile(snapshot, channel, sync, pins, ofports, needs_read=needs_read)
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
            metrics.RECONCILE_PASSES.labels("ok" if ok else "failed").inc()

    def _reconcile(
        self,
        snapshot: Snapshot,
        channel: SwitchChannel,
        sync: DatapathSync,
        pins: UdpPinFlusher,
        ofports: dict[str, int],
        *,
        needs_read: bool,
    ) -> bool:
        """Compute the switch's flows and apply the difference; True when it landed."""
        try:
            config = self._computer.compute(snapshot, DatapathView(self.host.id, ofports))
        except PipelineError as exc:
            # A contradictory snapshot leaves the switch as it is (no half-computed
            # state is pushed) until the desired state is fixed.
            self._set_error(f"cannot compute flows: {exc}")
            self._report_host(openflow=True)
            return False
        try:
            if not self._claim(channel):
                return False
            now = time.monotonic()
            if needs_read:
                sync.resync()
                self._last_audit = now
            elif now - self._last_audit >= self._config.reconcile_interval:
                sync.audit()  # counts; reads every flow back only when they disagree
                self._last_audit = now
            result = sync.apply(config.flows, config.groups)
            # After the flows that stopped picking a backend: see conntrack_flush.
            repeat_in = pins.flows_applied(config.udp_backends)
            self._pins_repeat_at = None if repeat_in is None else time.monotonic() + repeat_in
        except (SwitchDisconnected, TimeoutError) as exc:
            self._set_error(f"OpenFlow: {exc}")
            with self._lock:
                self._needs_read = True
            self._report_host(openflow=channel.connected)
            return False
        except OpenFlowError as exc:
            self._set_error(f"OpenFlow bundle failed: {exc}")
            with self._lock:
                self._needs_read = True
            self._report_host(openflow=True)
            return False
        if result.rejected:
            first = next(iter(result.rejected.items()))
            self._set_error(
                f"switch rejected {len(result.rejected)} flow(s)/group(s), "
                f"e.g. {first[0]!r}: {first[1]}"
            )
        else:
            self._set_error(None)
        if result.changed:
            log.info(
                "host %s: +%d/-%d flows, +%d/-%d groups (revision %d)",
                self.host.name,
                result.flows_added,
                result.flows_deleted,
                result.groups_added,
                result.groups_deleted,
                snapshot.revision,
            )
        # The switch now holds the desired flows and groups, less what it rejected.
        rejected_flows = sum(isinstance(item, Flow) for item in result.rejected)
        rejected_groups = len(result.rejected) - rejected_flows
        metrics.FLOWS.labels(self.host.name).set(len(config.flows) - rejected_flows)
        metrics.GROUPS.labels(self.host.name).set(len(config.groups) - rejected_groups)
        self._switch_holds = (len(config.flows) - rejected_flows,
                              len(config.groups) - rejected_groups)
        changes = {
            "flow_add": result.flows_added,
            "flow_delete": result.flows_deleted,
            "group_add": result.groups_added,
            "group_delete": result.groups_deleted,
        }
        metrics.RECONCILE_DIFF.observe(sum(changes.values()))
        for change, count in changes.items():
            if count:
                metrics.RECONCILE_CHANGES.labels(change).inc(count)
        self._report_ports(snapshot, config)
        self._report_host(openflow=True)
        return not result.rejected

    def _ovsdb_due(self) -> bool:
        """Whether this pass ensures the OVSDB intents: something they depend on changed
        (the hosts, the ports bound here, the switch's interfaces, the connection, the
        controller targets), the last attempt failed, or they were last ensured a
        reconcile interval ago (drift). At scale, looking at every VM port costs far
        more than the flows of a port changed elsewhere in one of this host's networks."""
        now = time.monotonic()
        with self._lock:
            due = (
                self._ovsdb_dirty
                or not self._ovsdb_ok
                or self._last_error is not None
                or now - self._ovsdb_ensured_at >= self._config.reconcile_interval
            )
            if due:
                self._ovsdb_dirty = False
                self._ovsdb_ensured_at = now
        return due

    def _claim(self, channel: SwitchChannel) -> bool:
        """Replicated: tell the switch we are its MASTER with our generation, once per
        connection and generation, before any flow-mod. The switch demotes the previous
        master to SLAVE; a stale generation (a newer master exists) is refused."""
        generation = self._generation
        if not self._replicated:
            return True
        if generation is None:
            return False
        if self._claimed == (channel, generation):
            return True
        xid = channel.next_xid()
        reply = channel.expect(xid)
        channel.send(ofmsg.role_request(xid, ofmsg.OFPCR_ROLE_MASTER, generation))
        try:
            reply.result(timeout=self._config.ovsdb_timeout)
        except OpenFlowError as exc:
            self._set_error(f"OpenFlow: role request (generation {generation}) refused: {exc}")
            return False
        with self._lock:
            if self._generation == generation:
                self._claimed = (channel, generation)
        log.info("host %s: OpenFlow MASTER, generation %d", self.host.name, generation)
        return self._claimed == (channel, generation)

    # ---- OVSDB intents -----------------------------------------------------------------

    def _ensure_ovsdb(self, snapshot: Snapshot) -> None:
        host, cfg = self.host, self._config
        bridge = cfg.integration_bridge
        if (host.ovsdb_remote, host.name) != self._ovsdb_for:
            # Re-registered (e.g. moved from tcp: to ssl:, or renamed): a new client,
            # so the new remote and the name its certificate must carry apply.
            self._ovsdb.close()
            self._ovsdb = self._ovsdb_factory(host.ovsdb_remote)
            self._ovsdb_for = (host.ovsdb_remote, host.name)
        target = controller_target_for(host, cfg)
        targets: tuple[str, ...] = (target,) if target else ()
        if self._controller_targets is not None:
            targets = self._controller_targets(host)  # every live replica's, ours included
        plaintext = plaintext_remotes(host)
        if cfg.require_tls and plaintext:
            # Not even connected to: the host is reported, never managed.
            self._set_ovsdb(
                False,
                f"refused: plaintext OVSDB remote {', '.join(plaintext)} while TLS is required;"
                " prepare the host for TLS and register it with ssl:",
            )
            return
        try:
            self._ovsdb.ensure_bridge(
                BridgeIntent(
                    name=bridge,
                    datapath_type=cfg.datapath_type,
                    datapath_id=f"{self.datapath_id:016x}",
                    controller_targets=targets,
                )
            )
            if host.uplink:
                self._ovsdb.ensure_uplink(bridge, host.uplink)
            self._ovsdb.ensure_tunnels(bridge, self._desired_tunnels(snapshot))
            self._ensure_vm_ports(snapshot, bridge)
        except OvsdbConflict as exc:
            # OVSDB answers but refuses an intent (e.g. the uplink sits on another bridge).
            self._set_ovsdb(True, None)
            self._set_error(f"OVSDB: {exc}")
            return
        except OvsdbUnavailable as exc:
            self._set_ovsdb(False, str(exc))
            return
        self._set_ovsdb(True, None)
        if target is None:
            self._set_error("no OpenFlow controller target: set OVS_FABRIC_OPENFLOW_ADVERTISE")

    def _await_interfaces(self) -> None:
        """Wait until the switch has announced the interfaces this pass plugged (so this
        pass installs their ports' flows), at most INTERFACE_WAIT_SECONDS; an interface
        OVS reports it cannot open, or that is gone, is not waited for."""
        deadline = time.monotonic() + INTERFACE_WAIT_SECONDS
        bridge = self._config.integration_bridge
        try:
            while True:
                with self._lock:
                    if not self._awaited - self._ofports.keys() or self._channel is None:
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        return
                    self._ofports_changed.wait(timeout=min(remaining, 0.02))
                    missing = self._awaited - self._ofports.keys()
                if not missing:
                    return
                try:
                    interfaces = self._ovsdb.interfaces(bridge)
                except OvsdbUnavailable:
                    return
                hopeless = {
                    name
                    for name in missing
                    if (info := interfaces.get(name)) is None or info.error is not None
                }
                with self._lock:
                    self._awaited -= hopeless
        finally:
            with self._lock:
                self._awaited.clear()

    def _desired_tunnels(self, snapshot: Snapshot) -> dict[str, tuple[str, str | None]]:
        if not self.host.tunnel_ip:
            return {}
        return {
            tunnel_interface_name(peer.id): (peer.tunnel_ip, self.host.tunnel_ip)
            for peer in snapshot.hosts
            if peer.id != self.host.id and peer.tunnel_ip
        }

    def _ensure_vm_ports(self, snapshot: Snapshot, bridge: str) -> None:
        wanted = {
            p.interface: p for p in snapshot.ports if p.host_id == self.host.id and p.interface
        }
        existing = self._ovsdb.interfaces(bridge)
        for name, port in wanted.items():
            present = existing.get(name)
            # A port libvirt plugged itself stays libvirt's: we only tag it.
            owned = present is None or present.owned
            if present is None:
                with self._lock:
                    self._awaited.add(name)  # before OVS can announce it
            self._ovsdb.ensure_vm_port(
                bridge, name, port_id=port.id, mac=port.mac, vm_id=port.vm_id, owned=owned
            )
        for name, info in self._ovsdb.managed_vm_ports(bridge).items():
            if name not in wanted and info.owned:
                self._ovsdb.remove_port(bridge, name)

    # ---- status ------------------------------------------------------------------------

    def _report_refused_switch(self) -> None:
        """A TLS handshake refused from this host's address is why its switch is missing."""
        if not self._ovsdb_ok:
            return  # the OVSDB error says more (and is what the operator fixes first)
        address = remote_address(self.host)
        refusal = None if address is None else REFUSALS.latest(address)
        if refusal is not None:
            self._set_error(f"OpenFlow: TLS connection from {address} refused: {refusal.reason}")

    def _set_ovsdb(self, ok: bool, error: str | None) -> None:
        metrics.OVSDB_CONNECTED.labels(self.host.name).set(ok)
        if ok != self._ovsdb_ok:
            if ok:
                log.info("host %s: OVSDB %s connected", self.host.name, self.host.ovsdb_remote)
            else:
                log.warning("host %s: OVSDB unreachable: %s", self.host.name, error)
        self._ovsdb_ok = ok
        if not ok:
            self._set_error(error)
        self._report_host(openflow=self._channel is not None)

    def _set_error(self, error: str | None) -> None:
        if error != self._last_error and error is not None:
            log.warning("host %s: %s", self.host.name, error)
        self._last_error = error

    def _report_host(self, *, openflow: bool) -> None:
        if not self.is_master:
            return  # the master reports the host
        status = HostStatus(
            host_id=self.host.id,
            ovsdb_connected=bool(self._ovsdb_ok),
            openflow_connected=openflow,
            datapath_id=f"{self.datapath_id:016x}",
            last_error=self._last_error,
            # Shown by `ovs-fabric status`; unknown while the switch is away.
            flow_count=self._switch_holds[0] if openflow else None,
            group_count=self._switch_holds[1] if openflow else None,
        )
        if status == self._reported_status:
            return
        now = time.monotonic()
        if only_counts_differ(status, self._reported_status):
            wait = self._host_reported_at + COUNTS_REPORT_INTERVAL - now
            if wait > 0:  # only the counts changed, and they were written just now
                self._wake_for_counts(wait)
                return
        self._store.record_host_status(status)
        self._reported_status = status
        self._host_reported_at = now

    def _wake_for_counts(self, delay: float) -> None:
        """A pass (which writes the counts) once `delay` has passed."""
        self._counts_timer = _one_wake_up(self._counts_timer, delay, self._wake.set)

    def _report_ports(self, snapshot: Snapshot, config: DatapathConfig | None) -> None:
        if not self.is_master:
            return
        realized = config.realized_ports if config is not None else _NOTHING_REALIZED
        with self._lock:
            if not self._ports_dirty and realized is self._reported_realized:
                return  # neither the ports bound here nor the realized ones changed
            self._ports_dirty = False
        try:
            self._report_port_statuses(snapshot, realized)
        except BaseException:
            self._ports_dirty = True
            raise
        self._reported_realized = realized

    def _report_port_statuses(self, snapshot: Snapshot, realized: frozenset[str]) -> None:
        now = datetime.now(UTC)
        # Keyed by the whole PortSpec: a re-bound port (which the API resets to DOWN)
        # is a new key and gets reported again even if it was ACTIVE before.
        bound_here = {p for p in snapshot.ports if p.host_id == self.host.id}
        changed: dict[PortSpec, PortStatus] = {}
        for port in bound_here:
            status: PortStatus = "ACTIVE" if port.id in realized else "DOWN"
            if self._reported_ports.get(port) != status:
                changed[port] = status
        for gone in set(self._reported_ports) - bound_here:
            del self._reported_ports[gone]
        if changed:
            # Remembered only once written: a status that did not reach SQL (the
            # database is down) is reported again by the next pass.
            self._store.record_port_status(
                [PortStatusUpdate(p.id, status, self.host.id, now) for p, status in changed.items()]
            )
            self._reported_ports.update(changed)
            for port, status in changed.items():
                log.info(
                    "port %s %s on host %s",
                    port.id,
                    status,
                    self.host.name,
                    extra={"port_id": port.id, "network_id": port.network_id, "status": status},
                )


def _one_wake_up(
    pending: threading.Timer | None, delay: float, wake: Callable[[], None]
) -> threading.Timer:
    """`pending` if it has yet to fire (one pending wake-up is enough, however many
    passes ask for it), else a new timer calling `wake` after `delay`."""
    if pending is not None and pending.is_alive():
        return pending
    timer = threading.Timer(delay, wake)
    timer.daemon = True
    timer.start()
    return timer
