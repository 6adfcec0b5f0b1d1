"""Intent-level access to one host's Open vSwitch database, on ovsdbapp.

Callers state what they want ("this bridge, with these settings", "these
tunnel ports and no other of ours") and an `ensure_*` call makes OVSDB match,
returning whether it had to change anything. The host manager calls these in
a loop every few seconds, so each intent is first checked against the IDL's
in-memory replica: when nothing differs, nothing is sent. When something does,
the same intent runs once more inside one OVSDB transaction, against the
replica as the IDL thread sees it at commit time, so the comparison and the
writes are atomic and a retried transaction (TRY_AGAIN) re-plans correctly.

A change someone else makes reaches the replica a moment after their commit,
so a call made in that moment may still answer "nothing to do"; the next pass
of the loop repairs it. That is the price of checking without a round trip.

Everything this service owns in OVSDB is marked in `external_ids`, so foreign
ports (another tool's VXLAN port, a port libvirt plugged itself) are never
taken for ours.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.timeval
import ovs.util
from ovs.db import idl as ovs_idl
from ovsdbapp import api as ovsdbapp_api
from ovsdbapp import exceptions as ovsdbapp_exceptions
from ovsdbapp.backend import ovs_idl as ovsdbapp_backend
from ovsdbapp.backend.ovs_idl import command as ovsdbapp_command
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection

from controller.tls import TlsFiles, describe_handshake_failure, peer_names

# ---- the marks this service leaves in external_ids ----------------------------------

MANAGED_KEY: Final = "ovs-fabric-managed"  # Bridge: created/maintained by us
ROLE_KEY: Final = "ovs-fabric-role"  # Interface: "uplink" | "tunnel"
OWNED_KEY: Final = "ovs-fabric-owned"  # Interface: we added the port, so we remove it
ROLE_UPLINK: Final = "uplink"
ROLE_TUNNEL: Final = "tunnel"
# The keys libvirt, os-vif and OVN use too, so other tools understand our VM ports.
IFACE_ID_KEY: Final = "iface-id"
ATTACHED_MAC_KEY: Final = "attached-mac"
VM_ID_KEY: Final = "vm-id"
IFACE_STATUS_KEY: Final = "iface-status"

_SCHEMA_NAME: Final = "Open_vSwitch"
# Only what the intents read or write: the Interface table's statistics and
# status columns change every few seconds and would wake the IDL for nothing.
_REPLICATED_COLUMNS: Final[dict[str, list[str]]] = {
    "Open_vSwitch": ["bridges"],
    "Bridge": [
        "name",
        "datapath_type",
        "datapath_id",
        "fail_mode",
        "protocols",
        "other_config",
        "external_ids",
        "controller",
        "ports",
    ],
    "Controller": ["target"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "type", "ofport", "external_ids", "options", "error"],
}
_DATAPATH_ID = re.compile(r"[0-9a-f]{16}")

_T = TypeVar("_T")
_Tables: TypeAlias = Mapping[str, Any]  # table name -> ovs.db.idl table (with .rows)
_Plan: TypeAlias = "Callable[[_RowEditor], None]"


class OvsdbUnavailable(Exception):
    """OVSDB could not be reached, or a transaction on it failed."""


class OvsdbConflict(OvsdbUnavailable):
    """OVSDB is reachable but its contents prevent an intent: the bridge it
    names is missing, or the interface is a port of another bridge. The next
    reconcile pass (after `ensure_bridge`) usually succeeds."""


@dataclass(frozen=True)
class BridgeIntent:
    """An OpenFlow 1.3 bridge in secure fail mode, controlled only by us.

    `datapath_id` is pinned through other_config so the controller knows the
    switch's dpid before it connects; it is normalised to lower case.
    """

    name: str
    datapath_type: str  # "netdev" | "system"
    datapath_id: str  # 16 hex digits, not all zero
    controller_targets: tuple[str, ...]  # "unix:/run/x/ofp.sock", "tcp:192.0.2.1:6653"

    def __post_init__(self) -> None:
        dpid = self.datapath_id.lower()
        if not _DATAPATH_ID.fullmatch(dpid) or int(dpid, 16) == 0:
            raise ValueError(f"datapath_id must be 16 hex digits, not all zero: {dpid!r}")
        if not self.name or not self.datapath_type:
            raise ValueError("a bridge needs a name and a datapath_type")
        object.__setattr__(self, "datapath_id", dpid)


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    ofport: int | None  # None while OVS has not assigned one, or the interface failed
    type: str  # "" (system), "internal", "vxlan", ...
    external_ids: Mapping[str, str]
    options: Mapping[str, str]
    error: str | None

    @property
    def owned(self) -> bool:
        """We added this port (ensure_vm_port with owned=True), so we remove it."""
        return self.external_ids.get(OWNED_KEY) == "true"


class OvsdbClient:
    """One host's OVSDB, through its own ovsdbapp connection and IDL thread.

    Lazy: nothing connects until the first call. Any call made while the
    connection is down tries one fresh connection, bounded by `timeout`, and
    raises `OvsdbUnavailable` if that fails; so a restarted ovsdb-server is
    picked up by the next call. Failures are raised, never logged: the caller
    logs state changes. Safe to use from several threads.
    """

    def __init__(
        self,
        remote: str,
        *,
        timeout: float = 5.0,
        tls: TlsFiles | None = None,
        peer_name: str | None = None,
    ) -> None:
        """`tls`: our key, certificate and CA for `ssl:` remotes; `peer_name`: the name
        the host's certificate must carry (CN or DNS subjectAltName), when given."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.remote = remote
        self._tls = _TlsPeer(tls, peer_name)
        self.timeout = timeout
        self._session: _Session | None = None
        self._session_lock = threading.Lock()

    def close(self) -> None:
        """Stop the IDL thread and drop the connection. A later call reconnects."""
        with self._session_lock:
            if self._session is not None:
                self._session.stop()
                self._session = None

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and session.healthy()

    # ---- intents -------------------------------------------------------------

    def ensure_bridge(self, intent: BridgeIntent) -> bool:
        """Create the bridge, or repair any of its settings that drifted."""
        return self._ensure(lambda edit: _plan_bridge(edit, intent))

    def ensure_uplink(self, bridge: str, interface: str) -> bool:
        """Make the existing system interface a port of `bridge`, marked as the uplink."""
        return self._ensure(lambda edit: _plan_uplink(edit, bridge, interface))

    def ensure_tunnels(self, bridge: str, tunnels: Mapping[str, tuple[str, str | None]]) -> bool:
        """Make our VXLAN ports on `bridge` exactly `tunnels`:
        {interface: (remote_ip, local_ip or None)}. Our tunnel ports not listed
        are removed; tunnel ports we did not create are left alone."""
        wanted = dict(tunnels)
        return self._ensure(lambda edit: _plan_tunnels(edit, bridge, wanted))

    def ensure_vm_port(
        self,
        bridge: str,
        interface: str,
        *,
        port_id: str,
        mac: str,
        vm_id: str | None,
        owned: bool = True,
    ) -> bool:
        """Bind a VM's interface to `port_id` through its external_ids.

        owned=True: we plug this interface, so the port is added when missing
        and marked ours (to be removed by us later). owned=False: someone else
        (libvirt) plugs it; we only stamp external_ids on it, never add it, and
        a missing port is simply not there yet (returns False).
        """
        binding = _VmBinding(port_id=port_id, mac=mac, vm_id=vm_id, owned=owned)
        return self._ensure(lambda edit: _plan_vm_port(edit, bridge, interface, binding))

    def remove_port(self, bridge: str, interface: str) -> bool:
        """Remove the port from `bridge` if it is there."""
        return self._ensure(lambda edit: _plan_removal(edit, bridge, interface))

    # ---- reads from the IDL replica ------------------------------------------

    def managed_vm_ports(self, bridge: str) -> dict[str, InterfaceInfo]:
        """Interfaces on `bridge` that carry an iface-id, by interface name."""
        return {
            name: info
            for name, info in self.interfaces(bridge).items()
            if IFACE_ID_KEY in info.external_ids
        }

    def interfaces(self, bridge: str) -> dict[str, InterfaceInfo]:
        """Every interface on `bridge` (its local port included), by name;
        empty when the bridge does not exist."""

        def read(tables: _Tables) -> dict[str, InterfaceInfo]:
            row = _bridge_row(tables, bridge)
            if row is None:
                return {}
            return {iface.name: _interface_info(iface) for _, iface in _ports_of(row)}

        return self._read(read)

    def bridge_exists(self, bridge: str) -> bool:
        return self._read(lambda tables: _bridge_row(tables, bridge) is not None)

    def datapath_id(self, bridge: str) -> str | None:
        """The dpid ovs-vswitchd reports for `bridge` (16 hex digits), if any yet."""

        def read(tables: _Tables) -> str | None:
            row = _bridge_row(tables, bridge)
            return None if row is None else _optional(row.datapath_id)

        return self._read(read)

    # ---- plumbing ------------------------------------------------------------

    def _live_session(self) -> _Session:
        with self._session_lock:
            if self._session is not None and self._session.healthy():
                return self._session
            if self._session is not None:
                self._session.stop()
                self._session = None
            try:
                self._session = _Session.open(self.remote, self.timeout, self._tls)
            except OvsdbUnavailable:
                raise
            except Exception as e:
                # Whatever the OVS library raises while connecting must reach the
                # host's status as an error, never end a pass silently.
                raise OvsdbUnavailable(
                    f"cannot connect to OVSDB at {self.remote}: {type(e).__name__}: {e}"
                ) from e
            return self._session

    def _forget(self, session: _Session) -> None:
        with self._session_lock:
            if self._session is session:
                self._session = None
        session.stop()

    def _read(self, reader: Callable[[_Tables], _T]) -> _T:
        session = self._live_session()
        with session.connection.lock:
            return reader(session.api.tables)

    def _ensure(self, plan: _Plan) -> bool:
        session = self._live_session()
        try:
            with session.connection.lock:
                if not _would_change(session.api.tables, plan):
                    return False
            with session.api.transaction(check_error=True, log_errors=False) as txn:
                applied = txn.add(_ApplyPlan(session.api, plan))
        except OvsdbConflict as e:
            raise OvsdbConflict(f"OVSDB at {self.remote}: {e}") from None
        except ovsdbapp_exceptions.TimeoutException as e:
            self._forget(session)
            raise OvsdbUnavailable(
                f"OVSDB at {self.remote} did not complete a transaction within {self.timeout}s"
            ) from e
        except Exception as e:
            # Whatever else failed (OVSDB error reply, connection lost mid-commit),
            # a fresh connection next time is the safe assumption.
            self._forget(session)
            raise OvsdbUnavailable(f"OVSDB transaction on {self.remote} failed: {e}") from e
        return bool(applied.result)


# ---- connection ------------------------------------------------------------------------


class _OpenVSwitchApi(ovsdbapp_backend.Backend, ovsdbapp_api.API):  # type: ignore[misc]
    """ovsdbapp's Backend keeps its connection on the class, so every instance
    in a process would share the first one; a client per host needs its own."""

    schema = _SCHEMA_NAME

    def __init__(self, connection: ovsdbapp_connection.Connection) -> None:
        self._own_connection = connection
        super().__init__(connection, start=False, auto_index=False)

    @property
    def ovsdb_connection(self) -> ovsdbapp_connection.Connection:
        return self._own_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, connection: ovsdbapp_connection.Connection) -> None:
        self._own_connection = connection


class _Session:
    """One established connection: IDL, its thread, and the ovsdbapp API on it."""

    def __init__(self, connection: ovsdbapp_connection.Connection) -> None:
        self.connection = connection
        self.api = _OpenVSwitchApi(connection)

    @classmethod
    def open(cls, remote: str, timeout: float, tls: _TlsPeer) -> _Session:
        deadline_ms = ovs.timeval.msec() + timeout * 1000
        helper = ovs_idl.SchemaHelper(None, _fetch_schema(remote, deadline_ms, tls))
        for table, columns in _REPLICATED_COLUMNS.items():
            helper.register_columns(table, columns)
        idl = ovsdbapp_connection.OvsdbIdl(remote, helper)
        remaining_s = max(0.05, (deadline_ms - ovs.timeval.msec()) / 1000)
        connection = ovsdbapp_connection.Connection(idl, remaining_s)
        try:
            connection.start()
        except Exception as e:
            idl.close()
            raise OvsdbUnavailable(
                f"OVSDB at {remote} did not send its contents within {timeout}s"
            ) from e
        # The connect budget is spent; transactions get the full timeout again.
        connection.timeout = timeout
        return cls(connection)

    def healthy(self) -> bool:
        thread = self.connection.thread
        idl = self.connection.idl
        # ovs.db.idl.Idl has no public "is connected"; its session does.
        return (
            thread is not None
            and thread.is_alive()
            and idl._session.is_connected()
            and idl.state == idl.IDL_S_MONITORING
        )

    def stop(self) -> None:
        """Stop the IDL thread without ever blocking longer than the timeout.

        ovsdbapp's Connection.stop() enqueues a sentinel with no timeout, which
        blocks forever if a transaction is stuck in the one-slot queue."""
        connection = self.connection
        connection.is_running = False
        try:
            connection.txns.put(None, timeout=connection.timeout)
        except queue.Full:
            connection.txns.alert_notify()
        thread = connection.thread
        if thread is not None:
            thread.join(connection.timeout)
            if not thread.is_alive():
                connection.thread = None


def _fetch_schema(remote: str, deadline_ms: float, tls: _TlsPeer) -> Any:
    """Ask the server for its Open_vSwitch schema, giving up at the deadline.

    ovsdbapp's own helper blocks without a bound on a server that accepts but
    never answers, and logs every failure; neither suits a reconcile loop."""
    failures = []
    for single_remote in _split_remotes(remote):
        try:
            return _fetch_schema_from(single_remote, deadline_ms, tls)
        except OvsdbUnavailable as e:
            failures.append(str(e))
    raise OvsdbUnavailable("; ".join(failures))


def _fetch_schema_from(remote: str, deadline_ms: float, tls: _TlsPeer) -> Any:
    if remote.startswith("ssl:"):
        tls.check(remote, deadline_ms)
    budget_ms = max(0, int(deadline_ms - ovs.timeval.msec()))
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), budget_ms)
    if error:
        raise OvsdbUnavailable(f"cannot connect to OVSDB at {remote}: {_describe(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request("get_schema", [_SCHEMA_NAME])
        error = rpc.send(request)
        while not error:
            error, reply = rpc.recv()
            if error == errno.EAGAIN:
                if ovs.timeval.msec() >= deadline_ms:
                    raise OvsdbUnavailable(f"OVSDB at {remote} did not answer in time")
                rpc.run()
                poller = ovs.poller.Poller()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.timer_wait_until(deadline_ms)
                poller.block()
                error = 0
                continue
            if reply is not None and reply.id == request.id:
                if reply.type == ovs.jsonrpc.Message.T_ERROR:
                    raise OvsdbUnavailable(
                        f"OVSDB at {remote} has no {_SCHEMA_NAME} database: {reply.error}"
                    )
                return reply.result
        raise OvsdbUnavailable(f"OVSDB at {remote} closed the connection: {_describe(error)}")
    finally:
        rpc.close()


@dataclass(frozen=True)
class _TlsPeer:
    """What an `ssl:` remote needs: our TLS files, and the name the host's certificate
    must carry."""

    files: TlsFiles | None
    name: str | None

    def check(self, remote: str, deadline_ms: float) -> None:
        """One handshake of our own before the OVS library connects, then hand it the files.

        NOTE: the OVS library's SSLStream turns every handshake failure into a bare
        errno (an unknown CA and an expired certificate both read "Operation not
        permitted"), does not check the peer's name, and raises TypeError when no
        CA is set. Python's ssl knows why a handshake failed, so it goes first.
        """
        if self.files is None:
            raise OvsdbUnavailable(
                f"OVSDB at {remote} needs TLS, and no TLS key, certificate and CA are"
                " configured (OVS_FABRIC_TLS_PRIVATE_KEY, _CERTIFICATE, _CA_CERTIFICATE)"
            )
        address = _ssl_address(remote)
        timeout_s = max(0.05, (deadline_ms - ovs.timeval.msec()) / 1000)
        try:
            context = self.files.client_context()
        except (OSError, ssl.SSLError) as e:
            raise OvsdbUnavailable(f"cannot load our TLS key, certificate or CA: {e}") from None
        try:
            raw = socket.create_connection(address, timeout=timeout_s)
        except OSError as e:
            raise OvsdbUnavailable(f"cannot connect to OVSDB at {remote}: {_oserror(e)}") from None
        try:
            with context.wrap_socket(raw) as conn:
                # With TLS 1.3 the server judges our certificate after our side of
                # the handshake is done: its verdict arrives with the first reply.
                conn.sendall(b'{"method":"echo","params":[],"id":"ovs-fabric-tls-check"}')
                if not conn.recv(4096):
                    raise ConnectionResetError("closed after the handshake")
                names = peer_names(conn.getpeercert())
        except (ssl.SSLError, OSError) as e:
            reason = describe_handshake_failure(e, peer="the host")
            raise OvsdbUnavailable(f"OVSDB at {remote}: TLS refused: {reason}") from None
        finally:
            raw.close()
        if self.name is not None and self.name not in names:
            raise OvsdbUnavailable(
                f"OVSDB at {remote}: TLS refused: the host's certificate is for"
                f" {', '.join(map(repr, names)) or 'no name'}, not {self.name!r}"
            )
        # The OVS library reads these (process-wide) each time it opens an ssl: stream.
        ovs.stream.Stream.ssl_set_private_key_file(str(self.files.private_key))
        ovs.stream.Stream.ssl_set_certificate_file(str(self.files.certificate))
        ovs.stream.Stream.ssl_set_ca_cert_file(str(self.files.ca_certificate))


def _ssl_address(remote: str) -> tuple[str, int]:
    host, sep, port = remote.removeprefix("ssl:").rpartition(":")
    if not sep or not port.isdigit():
        raise OvsdbUnavailable(f"OVSDB remote {remote} is not ssl:HOST:PORT")
    return host.strip("[]"), int(port)


def _oserror(e: OSError) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return "timed out"
    return e.strerror or str(e)


def _split_remotes(remote: str) -> list[str]:
    """Split "unix:/a,tcp:1.2.3.4:6640" into both; a comma inside one remote's options
    ("unix:/a,t") stays with it, as the OVS IDL itself parses them."""
    remotes: list[str] = []
    for part in remote.split(","):
        if remotes and ":" not in part:
            remotes[-1] += "," + part
        else:
            remotes.append(part)
    return remotes


def _describe(error: int) -> str:
    return "connection closed" if error == ovs.util.EOF else os.strerror(error)


# ---- planning and applying an intent ----------------------------------------------------


class _WouldChange(Exception):
    """Raised by a dry-run editor at the first write an intent asks for."""


_UNSET: Final = object()


class _RowEditor:
    """The only way intents touch rows: compares before every write.

    With a transaction it writes (and records that it did); without one it is
    a dry run that stops the intent at its first write. One intent function
    therefore serves both the cheap "anything to do?" check and the change.
    """

    def __init__(self, tables: _Tables, txn: ovs_idl.Transaction | None) -> None:
        self.tables = tables
        self._txn = txn
        self.changed = False

    def _write(self) -> ovs_idl.Transaction:
        if self._txn is None:
            raise _WouldChange
        self.changed = True
        return self._txn

    def insert(self, table: str, **columns: Any) -> Any:
        row = self._write().insert(self.tables[table])
        for column, value in columns.items():
            setattr(row, column, value)
        return row

    def ensure_value(self, row: Any, column: str, value: Any) -> None:
        current = _read_column(row, column)
        if current is _UNSET or not _same(current, value):
            self._write()
            setattr(row, column, value)

    def ensure_keys(self, row: Any, column: str, wanted: Mapping[str, str]) -> None:
        """Set these keys of a map column, leaving its other keys alone."""
        current = _read_column(row, column)
        if current is _UNSET:
            self._write()
            setattr(row, column, dict(wanted))
            return
        for key, value in wanted.items():
            if current.get(key) != value:
                self._write()
                row.setkey(column, key, value)

    def ensure_exact_map(self, row: Any, column: str, wanted: Mapping[str, str]) -> None:
        self.ensure_keys(row, column, wanted)
        current = _read_column(row, column)
        if current is not _UNSET:
            self.drop_keys(row, column, [key for key in current if key not in wanted])

    def drop_keys(self, row: Any, column: str, keys: list[str]) -> None:
        current = _read_column(row, column)
        if current is _UNSET:
            return
        for key in keys:
            if key in current:
                self._write()
                row.delkey(column, key)

    def replace(self, row: Any, column: str, value: Any) -> None:
        """Write a column the caller already found different (e.g. rows)."""
        self._write()
        setattr(row, column, value)

    def link(self, row: Any, column: str, child: Any) -> None:
        self._write()
        row.addvalue(column, child)

    def unlink(self, row: Any, column: str, child: Any) -> None:
        self._write()
        row.delvalue(column, child)


class _ApplyPlan(ovsdbapp_command.BaseCommand):  # type: ignore[misc]
    """Runs an intent inside the IDL thread's transaction; result: whether it wrote."""

    def __init__(self, api: _OpenVSwitchApi, plan: _Plan) -> None:
        super().__init__(api)
        self._plan = plan

    def run_idl(self, txn: ovs_idl.Transaction) -> None:
        # Called again from scratch if the server answers TRY_AGAIN.
        editor = _RowEditor(self.api.tables, txn)
        self._plan(editor)
        self.result = editor.changed


def _would_change(tables: _Tables, plan: _Plan) -> bool:
    try:
        plan(_RowEditor(tables, None))
    except _WouldChange:
        return True
    return False


# ---- the intents ------------------------------------------------------------------------


def _plan_bridge(edit: _RowEditor, intent: BridgeIntent) -> None:
    bridge = _bridge_row(edit.tables, intent.name)
    if bridge is None:
        local = _new_port(edit, intent.name, type="internal")
        bridge = edit.insert("Bridge", name=intent.name, ports=[local])
        edit.link(_root_row(edit.tables), "bridges", bridge)
    edit.ensure_value(bridge, "datapath_type", intent.datapath_type)
    edit.ensure_value(bridge, "fail_mode", ["secure"])
    edit.ensure_value(bridge, "protocols", ["OpenFlow13"])
    edit.ensure_keys(
        bridge,
        "other_config",
        {"datapath-id": intent.datapath_id, "disable-in-band": "true"},
    )
    edit.ensure_keys(bridge, "external_ids", {MANAGED_KEY: "true"})
    wanted_targets = sorted(set(intent.controller_targets))
    current = _read_column(bridge, "controller")
    current_targets = [] if current is _UNSET else sorted(c.target for c in current)
    if current_targets != wanted_targets:
        # Unreferenced Controller rows are garbage-collected by ovsdb-server.
        controllers = [edit.insert("Controller", target=t) for t in wanted_targets]
        edit.replace(bridge, "controller", controllers)


def _plan_uplink(edit: _RowEditor, bridge_name: str, interface: str) -> None:
    bridge = _require_bridge(edit.tables, bridge_name)
    iface = _interface_on(edit.tables, bridge, interface)
    if iface is None:
        _new_port(edit, interface, bridge=bridge, external_ids={ROLE_KEY: ROLE_UPLINK})
        return
    edit.ensure_keys(iface, "external_ids", {ROLE_KEY: ROLE_UPLINK})


def _plan_tunnels(
    edit: _RowEditor, bridge_name: str, tunnels: Mapping[str, tuple[str, str | None]]
) -> None:
    bridge = _require_bridge(edit.tables, bridge_name)
    for port, iface in list(_ports_of(bridge)):
        ours = iface.external_ids.get(ROLE_KEY) == ROLE_TUNNEL
        if ours and iface.name not in tunnels:
            edit.unlink(bridge, "ports", port)
    for name, (remote_ip, local_ip) in sorted(tunnels.items()):
        options = {"key": "flow", "remote_ip": remote_ip}
        if local_ip is not None:
            options["local_ip"] = local_ip
        iface = _interface_on(edit.tables, bridge, name)
        if iface is None:
            _new_port(
                edit,
                name,
                bridge=bridge,
                type="vxlan",
                options=options,
                external_ids={ROLE_KEY: ROLE_TUNNEL},
            )
            continue
        edit.ensure_value(iface, "type", "vxlan")
        # We own these ports, so options are exactly ours (a dropped local_ip goes).
        edit.ensure_exact_map(iface, "options", options)
        edit.ensure_keys(iface, "external_ids", {ROLE_KEY: ROLE_TUNNEL})


@dataclass(frozen=True)
class _VmBinding:
    port_id: str
    mac: str
    vm_id: str | None
    owned: bool

    def external_ids(self) -> dict[str, str]:
        ids = {
            IFACE_ID_KEY: self.port_id,
            ATTACHED_MAC_KEY: self.mac,
            IFACE_STATUS_KEY: "active",
        }
        if self.vm_id is not None:
            ids[VM_ID_KEY] = self.vm_id
        if self.owned:
            ids[OWNED_KEY] = "true"
        return ids


def _plan_vm_port(edit: _RowEditor, bridge_name: str, interface: str, binding: _VmBinding) -> None:
    bridge = _require_bridge(edit.tables, bridge_name)
    iface = _interface_on(edit.tables, bridge, interface)
    if iface is None:
        if binding.owned:
            _new_port(edit, interface, bridge=bridge, external_ids=binding.external_ids())
        return
    edit.ensure_keys(iface, "external_ids", binding.external_ids())
    if not binding.owned:
        edit.drop_keys(iface, "external_ids", [OWNED_KEY])


def _plan_removal(edit: _RowEditor, bridge_name: str, interface: str) -> None:
    bridge = _bridge_row(edit.tables, bridge_name)
    if bridge is None:
        return
    for port, iface in _ports_of(bridge):
        if iface.name == interface or port.name == interface:
            edit.unlink(bridge, "ports", port)
            return


def _new_port(
    edit: _RowEditor,
    name: str,
    *,
    bridge: Any = None,
    type: str = "",
    options: Mapping[str, str] | None = None,
    external_ids: Mapping[str, str] | None = None,
) -> Any:
    iface = edit.insert(
        "Interface",
        name=name,
        type=type,
        options=dict(options or {}),
        external_ids=dict(external_ids or {}),
    )
    port = edit.insert("Port", name=name, interfaces=[iface])
    if bridge is not None:
        edit.link(bridge, "ports", port)
    return port


# ---- reading rows --------------------------------------------------------------------


def _root_row(tables: _Tables) -> Any:
    return next(iter(tables["Open_vSwitch"].rows.values()))


def _bridge_row(tables: _Tables, name: str) -> Any | None:
    return next((b for b in tables["Bridge"].rows.values() if b.name == name), None)


def _require_bridge(tables: _Tables, name: str) -> Any:
    bridge = _bridge_row(tables, name)
    if bridge is None:
        raise OvsdbConflict(f"bridge {name} does not exist")
    return bridge


def _ports_of(bridge: Any) -> Iterator[tuple[Any, Any]]:
    for port in bridge.ports:
        for iface in port.interfaces:
            yield port, iface


def _interface_on(tables: _Tables, bridge: Any, name: str) -> Any | None:
    """The interface `name` on `bridge`; OvsdbConflict if another bridge has it."""
    for _, iface in _ports_of(bridge):
        if iface.name == name:
            return iface
    for other in tables["Bridge"].rows.values():
        if other.name != bridge.name and any(i.name == name for _, i in _ports_of(other)):
            raise OvsdbConflict(f"interface {name} is a port of bridge {other.name}")
    return None


def _interface_info(iface: Any) -> InterfaceInfo:
    ofport = _optional(iface.ofport)
    return InterfaceInfo(
        name=iface.name,
        ofport=ofport if ofport is not None and ofport > 0 else None,
        type=iface.type,
        external_ids=dict(iface.external_ids),
        options=dict(iface.options),
        error=_optional(iface.error),
    )


def _read_column(row: Any, column: str) -> Any:
    """A column's value, or _UNSET for a column of a row inserted in this
    transaction that nothing has written yet."""
    try:
        return getattr(row, column)
    except AttributeError:
        return _UNSET


def _optional(value: list[Any]) -> Any | None:
    """The OVS IDL gives optional (0..1) columns as lists."""
    return value[0] if value else None


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(current, list) and isinstance(wanted, list):
        return sorted(current) == sorted(wanted)
    return bool(current == wanted)
