"""Watch each libvirt host and keep its VMs' port bindings in SQL in step.

The watcher never talks to OVS: it changes desired state (bind, unbind,
create, delete ports) and the controller wires what SQL says. It is
level-triggered like the controller: an event only names a domain to look at
again (its state and live XML, compared with SQL); on every (re)connect and
every `resync_interval` the whole host is compared, so events missed while the
service or libvirtd was down leave nothing unwired and no stale binding.

Threads: libvirt's default event loop is process-wide (registered once,
before any connection) and runs on one daemon thread; its callbacks only queue
the domain's UUID. Each host has a worker thread that owns its connection,
drains the queue and does the libvirt calls and SQL writes. A supervisor
thread re-reads the hosts with a libvirt URI and starts or stops workers.

Live migration: the destination's domain is paused (reason "migration") until
the migration completes, and a paused domain never takes a port bound to
another host; the running destination does. The source's STOPPED/MIGRATED
does not unbind: the binding stays for `migration_grace` seconds, so the
source's flows go only once the destination has the binding (or when no
watched host took it in that time).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import libvirt
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from api.config import Settings
from api.libvirt.domain_xml import (
    DomainActivity,
    DomainXmlError,
    InterfaceReport,
    ObservedDomain,
    parse_domain,
)
from api.libvirt.vm_ports import VmPortStore, WatchedHost
from api.metrics import LIBVIRT_EVENTS
from api.store.db import Database

log = logging.getLogger(__name__)

RESYNC_INTERVAL = 30.0
HOSTS_POLL_INTERVAL = 1.0  # one small SELECT; a new host is watched within a second
MIGRATION_GRACE = 60.0
KEEPALIVE_INTERVAL = 5  # seconds between keepalive probes
KEEPALIVE_COUNT = 3  # unanswered probes before the connection is declared dead
RECONNECT_MAX_WAIT = 5.0
FAILED_RETRY = 2.0  # seconds before comparing again after a failed SQL write


# ---- pure decisions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventEffect:
    refresh: bool  # look at the domain again
    migrated_away: bool = False  # keep its bindings here until the destination takes them


# libvirt's lifecycle event numbers by name (STARTED, STOPPED, ...), for the events metric.
_LIFECYCLE_NAMES: dict[int, str] = {
    getattr(libvirt, f"VIR_DOMAIN_EVENT_{name}"): name
    for name in (
        *("DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED"),
        *("STOPPED", "SHUTDOWN", "PMSUSPENDED", "CRASHED"),
    )
}


def lifecycle_effect(event: int, detail: int) -> EventEffect:
    """What a lifecycle event (libvirt's event and detail numbers) asks of the watcher."""
    if (
        event == libvirt.VIR_DOMAIN_EVENT_STOPPED
        and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED
    ):
        return EventEffect(refresh=True, migrated_away=True)
    if event in (
        libvirt.VIR_DOMAIN_EVENT_DEFINED,
        libvirt.VIR_DOMAIN_EVENT_SHUTDOWN,  # the guest is shutting down; STOPPED follows
        libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED,
    ):
        return EventEffect(refresh=False)
    # STARTED, RESUMED, SUSPENDED, STOPPED, UNDEFINED, CRASHED: the domain's
    # state decides (an incoming migration's STARTED finds it paused for
    # migration and changes nothing; RESUMED/MIGRATED finds it running).
    return EventEffect(refresh=True)


def domain_activity(state: int, reason: int) -> DomainActivity:
    """What libvirt's (state, reason) of a domain means for its ports on this host."""
    if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
        return "inactive"
    if state == libvirt.VIR_DOMAIN_PAUSED:
        if reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY):
            return "migrating"
        return "paused"
    if state in (
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
    ):
        return "running"
    return "paused"  # NOSTATE, PMSUSPENDED: its NICs exist, but take nothing from elsewhere


def hosts_to_watch(
    hosts: Iterable[WatchedHost],
) -> tuple[list[WatchedHost], list[tuple[WatchedHost, WatchedHost]]]:
    """The hosts to watch: the first (oldest) host of each libvirt URI.

    Two hosts on one libvirtd would each see its VMs running and take their
    ports from the other forever. Returns (watched, [(left out, the one watched)]).
    """
    first_by_uri: dict[str, WatchedHost] = {}
    shadowed: list[tuple[WatchedHost, WatchedHost]] = []
    for host in hosts:
        first = first_by_uri.setdefault(host.libvirt_uri, host)
        if first is not host:
            shadowed.append((host, first))
    return list(first_by_uri.values()), shadowed


# ---- libvirt's event loop (one per process) ------------------------------------------

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it; idempotent.

    It must be registered before the process opens any libvirt connection, or
    that connection delivers no events (hence: call this first).
    """
    global _event_loop_thread
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        # libvirt's default handler prints every error on stderr; ours are logged.
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        _event_loop_thread = threading.Thread(
            target=_run_event_loop, name="libvirt-events", daemon=True
        )
        _event_loop_thread.start()


def _ignore_error(_context: Any, _error: Any) -> None:
    return None


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # one bad callback must not stop every host's events
            log.exception("libvirt event loop iteration failed")


# ---- what the watchers see (for the API) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class HostInterfaces:
    host_id: str
    host_name: str
    libvirt_uri: str
    connected: bool
    last_error: str | None
    updated_at: datetime | None
    interfaces: tuple[InterfaceReport, ...]


_supervisors_lock = threading.Lock()
_supervisors: list[WatcherSupervisor] = []


def host_interface_reports() -> list[HostInterfaces] | None:
    """Every watched host's interfaces; None when no watcher runs in this process."""
    with _supervisors_lock:
        supervisors = list(_supervisors)
    if not supervisors:
        return None
    return [report for s in supervisors for report in s.reports()]


# ---- one host ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DomainChanged:
    connection: Any
    uuid: str
    effect: EventEffect


@dataclass(frozen=True, slots=True)
class _ConnectionLost:
    connection: Any
    reason: str


class _Stop:
    pass


_QueueItem = _DomainChanged | _ConnectionLost | _Stop

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file (libvirtd stopped?)",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by client",
}


class _Disconnected(Exception):
    """The connection is gone; reconnect."""


class _Unreadable(Exception):
    """A domain's state or XML could not be read."""


class LibvirtWatcher:
    """Keeps one host's VM bindings in step with what its libvirtd runs."""

    def __init__(
        self,
        host: WatchedHost,
        store: VmPortStore,
        *,
        resync_interval: float = RESYNC_INTERVAL,
        migration_grace: float = MIGRATION_GRACE,
        reconnect_max_wait: float = RECONNECT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self._store = store
        self._resync_interval = resync_interval
        self._migration_grace = migration_grace
        self._reconnect_max_wait = reconnect_max_wait
        self._clock = clock
        self._queue: queue.Queue[_QueueItem] = queue.Queue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connected = False
        self._last_error: str | None = None
        self._updated_at: datetime | None = None
        self._reports: dict[str, tuple[InterfaceReport, ...]] = {}
        self._logged_problems: set[tuple[str, str, str]] = set()
        self._migrated_away: dict[str, float] = {}  # vm uuid -> end of its grace
        self._callback_ids: list[int] = []
        self._thread = threading.Thread(target=self._run, name=f"libvirt:{host.name}", daemon=True)

    # ---- control (any thread) ----------------------------------------------------------

    def start(self) -> None:
        ensure_event_loop()
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._queue.put(_Stop())
        self._thread.join(timeout=timeout)

    def report(self) -> HostInterfaces:
        with self._lock:
            interfaces = tuple(
                item for vm_id in sorted(self._reports) for item in self._reports[vm_id]
            )
            return HostInterfaces(
                host_id=self.host.id,
                host_name=self.host.name,
                libvirt_uri=self.host.libvirt_uri,
                connected=self._connected,
                last_error=self._last_error,
                updated_at=self._updated_at,
                interfaces=interfaces,
            )

    # ---- the worker --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            connection = self._connect()
            if connection is None:
                return
            try:
                self._serve(connection)
            except _Disconnected as exc:
                self._set_connected(False, str(exc))
                log.warning(
                    "libvirt %s (%s): %s; reconnecting", self.host.name, self.host.libvirt_uri, exc
                )
            except Exception as exc:  # a bug must not end the host's watching for good
                self._set_connected(False, f"watcher failed: {exc}")
                log.exception("libvirt %s: watcher failed; reconnecting", self.host.name)
                self._stopping.wait(1.0)
            finally:
                self._close(connection)
        self._set_connected(False, None)

    def _connect(self) -> Any | None:
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            self._set_connected(False, f"cannot connect: {error}")
            level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
            log.log(
                level,
                "libvirt %s: cannot connect to %s: %s; retrying",
                self.host.name,
                self.host.libvirt_uri,
                error,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(libvirt.libvirtError),
            wait=wait_exponential_jitter(initial=0.1, max=self._reconnect_max_wait, jitter=0.1),
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._pause,
            before_sleep=log_retry,
        )
        try:
            return retrying(self._open)
        except RetryError:
            return None

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # a stop ends the wait at once

    def _open(self) -> Any:
        # Read-only is enough to read domains and receive their events.
        connection = libvirt.openReadOnly(self.host.libvirt_uri)
        try:
            connection.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
            connection.registerCloseCallback(self._on_close, None)
            for event_id, callback in (
                (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
                (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._on_device),
                (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device),
            ):
                self._callback_ids.append(
                    connection.domainEventRegisterAny(None, event_id, callback, None)
                )
        except libvirt.libvirtError:
            self._close(connection)
            raise
        log.info("libvirt %s: watching %s", self.host.name, self.host.libvirt_uri)
        return connection

    def _close(self, connection: Any) -> None:
        # A dead connection may refuse these calls; its callbacks are gone with it anyway.
        callback_ids, self._callback_ids = self._callback_ids, []
        for callback_id in callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                connection.domainEventDeregisterAny(callback_id)
        with contextlib.suppress(libvirt.libvirtError):
            connection.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            connection.close()

    def _serve(self, connection: Any) -> None:
        self._set_connected(True, None)
        next_resync = self._next_resync(self._full_reconcile(connection))
        while not self._stopping.is_set():
            wake_at = min([next_resync, *self._migrated_away.values()])
            try:
                first = self._queue.get(timeout=max(0.0, wake_at - self._clock()))
            except queue.Empty:
                next_resync = self._next_resync(self._full_reconcile(connection))
                continue
            items = [first, *_drain(self._queue)]
            changed: dict[str, bool] = {}  # uuid -> migrated away; events coalesce per domain
            for item in items:
                if isinstance(item, _Stop):
                    return
                if item.connection is not connection:
                    continue  # left over from a previous connection
                if isinstance(item, _ConnectionLost):
                    raise _Disconnected(f"connection closed: {item.reason}")
                if item.effect.refresh:
                    changed[item.uuid] = changed.get(item.uuid, False) or item.effect.migrated_away
            for uuid, migrated_away in changed.items():
                if migrated_away:
                    self._migrated_away[uuid] = self._clock() + self._migration_grace
                if not self._refresh_domain(connection, uuid):
                    next_resync = self._next_resync(False)

    def _next_resync(self, succeeded: bool) -> float:
        # After a failed write (database busy or down) compare again soon.
        delay = self._resync_interval if succeeded else min(FAILED_RETRY, self._resync_interval)
        return self._clock() + delay

    # ---- libvirt callbacks (the event loop thread): queue and return ---------------------

    def _on_lifecycle(
        self, connection: Any, domain: Any, event: int, detail: int, _opaque: Any
    ) -> None:
        LIBVIRT_EVENTS.labels(_LIFECYCLE_NAMES.get(event, str(event))).inc()
        effect = lifecycle_effect(event, detail)
        self._queue.put(_DomainChanged(connection, domain.UUIDString().lower(), effect))

    def _on_device(self, connection: Any, domain: Any, _alias: str, _opaque: Any) -> None:
        LIBVIRT_EVENTS.labels("DEVICE_CHANGED").inc()
        effect = EventEffect(refresh=True)
        self._queue.put(_DomainChanged(connection, domain.UUIDString().lower(), effect))

    def _on_close(self, connection: Any, reason: int, _opaque: Any) -> None:
        self._queue.put(_ConnectionLost(connection, _CLOSE_REASONS.get(reason, f"reason {reason}")))

    # ---- comparing ---------------------------------------------------------------------

    def _full_reconcile(self, connection: Any) -> bool:
        listed = self._call(
            connection, connection.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        )
        try:
            observed = [self._observe(connection, d) for d in listed]
        except _Unreadable as exc:
            # Judging without it would unbind a VM that may well be running.
            log.warning("libvirt %s: %s; comparing again soon", self.host.name, exc)
            return False
        return self._reconcile([o for o in observed if o is not None], scope=None)

    def _refresh_domain(self, connection: Any, uuid: str) -> bool:
        try:
            domain = connection.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                self._raise_if_dead(connection, exc)
            domain = None
        try:
            observed = self._observe(connection, domain) if domain is not None else None
        except _Unreadable as exc:
            log.warning("libvirt %s: %s; comparing again soon", self.host.name, exc)
            return False
        if observed is not None:
            self._migrated_away.pop(uuid, None)
        return self._reconcile([observed] if observed else [], scope=frozenset({uuid}))

    def _reconcile(self, domains: list[ObservedDomain], *, scope: frozenset[str] | None) -> bool:
        try:
            outcome = self._store.reconcile(
                self.host.id, domains, scope=scope, keep_vm_ids=self._kept_vm_ids()
            )
        except Exception as exc:  # SQL unavailable or a bug: the next comparison repairs
            log.exception("libvirt %s: updating the bindings failed", self.host.name)
            with self._lock:
                self._last_error = f"updating the bindings failed: {exc}"
            return False
        with self._lock:
            self._last_error = None
        self._record(
            outcome.changes, outcome.reports, replace_all=scope is None, vm_ids=scope or ()
        )
        return True

    def _observe(self, connection: Any, domain: Any) -> ObservedDomain | None:
        """The domain as the bindings need it; None when it is not active here.

        Raises `_Unreadable` when its state or XML cannot be had (the connection
        being alive): not knowing is not the same as "not running".
        """
        try:
            if domain_activity(*domain.state()) == "inactive":
                return None
            xml = domain.XMLDesc(0)
            # It may have stopped between the two calls: its XML then has no taps.
            activity = domain_activity(*domain.state())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            self._raise_if_dead(connection, exc)
            raise _Unreadable(f"cannot read a domain: {exc}") from exc
        if activity == "inactive":
            return None
        try:
            return ObservedDomain(parse_domain(xml), activity)
        except DomainXmlError as exc:
            raise _Unreadable(str(exc)) from exc

    def _call(self, connection: Any, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except libvirt.libvirtError as exc:
            self._raise_if_dead(connection, exc)
            raise

    def _raise_if_dead(self, connection: Any, exc: Exception) -> None:
        alive = False
        with contextlib.suppress(libvirt.libvirtError):
            alive = bool(connection.isAlive())
        if not alive:
            raise _Disconnected(f"connection lost: {exc}") from exc

    def _kept_vm_ids(self) -> frozenset[str]:
        now = self._clock()
        for uuid in [u for u, until in self._migrated_away.items() if until <= now]:
            del self._migrated_away[uuid]
        return frozenset(self._migrated_away)

    # ---- what was seen ------------------------------------------------------------------

    def _record(
        self,
        changes: Iterable[str],
        reports: Iterable[InterfaceReport],
        *,
        replace_all: bool,
        vm_ids: Iterable[str],
    ) -> None:
        for change in changes:
            log.info("libvirt %s: %s", self.host.name, change)
        by_vm: dict[str, list[InterfaceReport]] = {}
        for item in reports:
            by_vm.setdefault(item.vm_id, []).append(item)
        with self._lock:
            if replace_all:
                self._reports = {vm: tuple(items) for vm, items in by_vm.items()}
            else:
                for vm in vm_ids:
                    self._reports.pop(vm, None)
                self._reports.update({vm: tuple(items) for vm, items in by_vm.items()})
            self._updated_at = datetime.now(UTC)
            current = [item for items in self._reports.values() for item in items]
        self._log_problems_once(current)

    def _log_problems_once(self, current: list[InterfaceReport]) -> None:
        problems = {
            (item.vm_id, item.mac, item.reason or "")
            for item in current
            if item.state == "unmatched"
        }
        for vm_id, mac, reason in sorted(problems - self._logged_problems):
            name = next((i.vm_name for i in current if i.vm_id == vm_id), vm_id)
            log.warning(
                "libvirt %s: VM %s interface %s left alone: %s", self.host.name, name, mac, reason
            )
        self._logged_problems = problems

    def _set_connected(self, connected: bool, error: str | None) -> None:
        with self._lock:
            self._connected = connected
            self._last_error = error


def _drain(items: queue.Queue[_QueueItem]) -> list[_QueueItem]:
    drained: list[_QueueItem] = []
    with contextlib.suppress(queue.Empty):
        while True:
            drained.append(items.get_nowait())
    return drained


# ---- every host ----------------------------------------------------------------------


class WatcherSupervisor:
    """Runs one watcher per host row that has a libvirt URI, following the hosts table."""

    def __init__(
        self,
        store: VmPortStore,
        *,
        hosts_poll_interval: float = HOSTS_POLL_INTERVAL,
        watcher_factory: Callable[[WatchedHost], LibvirtWatcher] | None = None,
    ) -> None:
        self._store = store
        self._poll_interval = hosts_poll_interval
        self._factory = watcher_factory or (lambda host: LibvirtWatcher(host, store))
        self._watchers: dict[str, LibvirtWatcher] = {}
        self._shadowed_logged: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="libvirt-hosts", daemon=True)

    def start(self) -> None:
        ensure_event_loop()
        with _supervisors_lock:
            _supervisors.append(self)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        with self._lock:
            watchers = list(self._watchers.values())
            self._watchers.clear()
        for watcher in watchers:
            watcher.stop()
        with _supervisors_lock, contextlib.suppress(ValueError):
            _supervisors.remove(self)

    def reports(self) -> list[HostInterfaces]:
        with self._lock:
            watchers = list(self._watchers.values())
        return [w.report() for w in watchers]

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._follow(self._store.libvirt_hosts())
            except Exception:  # the database may be briefly unavailable
                log.exception("reading the libvirt hosts failed; retrying")
            self._stopping.wait(self._poll_interval)

    def _follow(self, hosts: list[WatchedHost]) -> None:
        watched, shadowed = hosts_to_watch(hosts)
        for host, first in shadowed:
            if host.id not in self._shadowed_logged:
                log.error(
                    "hosts %s and %s share libvirt URI %s: only %s is watched "
                    "(both would claim the same VMs' ports)",
                    first.name,
                    host.name,
                    host.libvirt_uri,
                    first.name,
                )
        self._shadowed_logged = {host.id for host, _ in shadowed}
        wanted = {h.id: h for h in watched}
        with self._lock:
            gone = [w for hid, w in self._watchers.items() if wanted.get(hid) != w.host]
            for watcher in gone:
                del self._watchers[watcher.host.id]
            new = [self._factory(h) for hid, h in wanted.items() if hid not in self._watchers]
            for watcher in new:
                self._watchers[watcher.host.id] = watcher
        for watcher in gone:
            log.info("libvirt %s: no longer watched", watcher.host.name)
            watcher.stop()
        for watcher in new:
            watcher.start()


def start_libvirt_watchers(settings: Settings, database: Database) -> Callable[[], None]:
    """Watch every host with a libvirt URI (hosts are re-read every few seconds).

    Returns the function that stops every watcher.
    """
    if not settings.libvirt_enabled:
        return lambda: None
    supervisor = WatcherSupervisor(
        VmPortStore(database, integration_bridge=settings.integration_bridge)
    )
    supervisor.start()
    return supervisor.stop
