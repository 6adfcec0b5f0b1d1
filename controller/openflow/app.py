"""The os-ken application: thin OpenFlow event handlers, no decisions.

Handlers translate os-ken events into calls on a `SwitchEventSink` (the host
manager) and into replies on each switch's `SwitchChannel`. They never block:
os-ken delivers every switch's events on this app's single event thread.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    DEAD_DISPATCHER,
    HANDSHAKE_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_3

from controller.core import ofmsg
from controller.openflow.channel import OpenFlowError, SwitchChannel
from controller.openflow.keepalive import Keepalive, install_receive_hook
from controller.openflow.probe_schedule import SERVICE_SCHEDULE, ProbeSchedule
from controller.openflow.tls_front import TlsFront, TlsListener

log = logging.getLogger(__name__)

_MULTIPART_HEADER = 16  # ofp_header + type, flags, pad
_EXPERIMENTER_HEADER = 8  # experimenter id, exp_type (after the multipart header)
_OFPMPF_REPLY_MORE = 1

# Liveness (issue 9: a switch that stops answering is reported disconnected
# within 3 s) is the keepalive's (controller.openflow.keepalive), on the schedule
# of controller.openflow.probe_schedule.SERVICE_SCHEDULE.
# NOTE: a switch sends its echo reply after whatever it queued before: reading
# back 100k flows delayed the reply by ~5 s while os-ken parsed every flow, 0.14 s
# now (python -m bench.echo_readback --measure-only). As in OVS's rconn, any
# message from the switch is proof of life: a healthy switch streaming a long
# multipart reply is never silent for long, whatever its echo replies wait behind.


class SwitchEventSink(Protocol):
    def switch_connected(
        self, datapath_id: int, channel: SwitchChannel, ports: dict[str, int]
    ) -> None: ...

    def switch_disconnected(self, datapath_id: int, channel: SwitchChannel) -> None: ...

    def ports_changed(self, datapath_id: int, ports: dict[str, int]) -> None: ...

    def packet_in(
        self, datapath_id: int, *, in_port: int, table_id: int, cookie: int, data: bytes
    ) -> None: ...


def _install_raw_multipart_parser() -> None:
    """Leave the bodies of the multipart replies we read ourselves unparsed.

    NOTE: os-ken parses every OFPMP_FLOW entry into objects (match fields, MAC
    strings through netaddr, instructions): 60-70 us per flow, 6.5 s of a 7.4 s
    read-back of 100k flows (py-spy, BENCHMARKS.md), while the reconciler needs
    only each entry's cookie (controller.core.ofmsg parses that in ~0.3 us). The
    message keeps its os-ken class, so its event and handlers are unchanged; only
    `body` stays None. os-ken keeps its parsers per process; the service is the
    only OpenFlow application in its process, and nothing else reads these bodies.
    """
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    raw_types = {
        ofmsg.OFPMP_FLOW: parser.OFPFlowStatsReply,
        ofmsg.OFPMP_AGGREGATE: parser.OFPAggregateStatsReply,
        ofmsg.OFPMP_GROUP_DESC: parser.OFPGroupDescStatsReply,
        ofmsg.OFPMP_EXPERIMENTER: parser.OFPExperimenterStatsReply,
    }
    parse_any = parser._MSG_PARSERS[ofmsg.OFPT_MULTIPART_REPLY]
    if getattr(parse_any, "raw_types", None) is not None:
        return  # installed already

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
        stats_type = int.from_bytes(buf[8:10], "big")
        cls = raw_types.get(stats_type)
        if cls is None:
            return parse_any(datapath, version, msg_type, msg_len, xid, buf)
        msg = cls(datapath)
        msg.set_headers(version, msg_type, msg_len, xid)
        msg.set_buf(buf)
        msg.type = stats_type
        msg.flags = int.from_bytes(buf[10:12], "big")
        return msg

    parse.raw_types = raw_types  # type: ignore[attr-defined]
    parser._MSG_PARSERS[ofmsg.OFPT_MULTIPART_REPLY] = parse


def _port_name(port: Any) -> str:
    name = port.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


class FabricOpenFlowApp(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    # Set by `start_openflow_controller` before os-ken instantiates the app.
    sink: SwitchEventSink | None = None
    keepalive: Keepalive | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._channels: dict[int, tuple[Any, SwitchChannel]] = {}
        self._ports: dict[int, dict[int, str]] = {}

    # ---- connection lifecycle ------------------------------------------------------

    @set_ev_cls(
        ofp_event.EventOFPStateChange, [HANDSHAKE_DISPATCHER, MAIN_DISPATCHER, DEAD_DISPATCHER]
    )
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.state == HANDSHAKE_DISPATCHER:
            # A new connection: watched from now on, even if it never says hello.
            if self.keepalive is not None:
                self.keepalive.watch(dp)
            return
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            keepalive = self.keepalive
            channel = SwitchChannel(
                dp.id,
                dp.send,
                allow_silence=None
                if keepalive is None
                else functools.partial(keepalive.allow_silence, dp),
            )
            previous = self._channels.get(dp.id)
            if previous is not None:
                # The switch reconnected before os-ken noticed the old connection
                # died: nothing will ever answer on it, so fail its waiters now.
                previous[1].on_disconnect()
            self._channels[dp.id] = (dp, channel)
            self._ports[dp.id] = {no: _port_name(p) for no, p in (dp.ports or {}).items()}
            log.info("switch %016x connected from %s", dp.id, dp.address)
            self._sink().switch_connected(dp.id, channel, self._port_map(dp.id))
        elif ev.state == DEAD_DISPATCHER:
            current = self._channels.get(dp.id)
            if current is None or current[0] is not dp:
                return  # an older connection of a switch that has already reconnected
            del self._channels[dp.id]
            self._ports.pop(dp.id, None)
            current[1].on_disconnect()
            log.info("switch %016x disconnected", dp.id)
            self._sink().switch_disconnected(dp.id, current[1])

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        ports = self._ports.get(msg.datapath.id)
        if ports is None:
            return
        ofp = msg.datapath.ofproto
        if msg.reason == ofp.OFPPR_DELETE:
            ports.pop(msg.desc.port_no, None)
        else:
            ports[msg.desc.port_no] = _port_name(msg.desc)
        self._sink().ports_changed(msg.datapath.id, self._port_map(msg.datapath.id))

    # ---- replies ---------------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        channel = self._channel(msg)
        if channel is not None:
            channel.on_error(OpenFlowError(msg.xid, msg.type, msg.code, bytes(msg.data or b"")))

    @set_ev_cls(ofp_event.EventONFBundleCtrlMsg, MAIN_DISPATCHER)
    def _bundle_reply(self, ev: Any) -> None:
        self._reply(ev.msg)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev: Any) -> None:
        self._reply(ev.msg)

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def _role_reply(self, ev: Any) -> None:
        self._reply(ev.msg)

    @set_ev_cls(
        [
            ofp_event.EventOFPFlowStatsReply,
            ofp_event.EventOFPAggregateStatsReply,
            ofp_event.EventOFPGroupDescStatsReply,
        ],
        MAIN_DISPATCHER,
    )
    def _multipart_reply(self, ev: Any) -> None:
        msg = ev.msg
        channel = self._channel(msg)
        if channel is not None:
            body = bytes(msg.buf[_MULTIPART_HEADER : msg.msg_len])
            channel.on_multipart(msg.xid, body, bool(msg.flags & _OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPExperimenterStatsReply, MAIN_DISPATCHER)
    def _experimenter_reply(self, ev: Any) -> None:
        msg = ev.msg
        channel = self._channel(msg)
        if channel is None:
            return
        start = _MULTIPART_HEADER + _EXPERIMENTER_HEADER
        experimenter = int.from_bytes(msg.buf[_MULTIPART_HEADER : _MULTIPART_HEADER + 4], "big")
        exp_type = int.from_bytes(msg.buf[_MULTIPART_HEADER + 4 : start], "big")
        if (experimenter, exp_type) != (ofmsg.ONF_EXPERIMENTER_ID, ofmsg.ONFST_FLOW_MONITOR):
            return
        body = bytes(msg.buf[start : msg.msg_len])
        if msg.xid == 0:  # pushed by the switch: flows changed
            channel.on_flow_updates(body)
        else:
            channel.on_multipart(msg.xid, body, bool(msg.flags & _OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPExperimenter, MAIN_DISPATCHER)
    def _experimenter(self, ev: Any) -> None:
        msg = ev.msg
        channel = self._channel(msg)
        if channel is None or msg.experimenter != ofmsg.ONF_EXPERIMENTER_ID:
            return
        if msg.exp_type == ofmsg.ONFT_FLOW_MONITOR_PAUSED:
            channel.on_monitor_paused()
        elif msg.exp_type == ofmsg.ONFT_FLOW_MONITOR_RESUMED:
            channel.on_monitor_resumed()

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        self._sink().packet_in(
            msg.datapath.id,
            in_port=int(msg.match.get("in_port", 0)),
            table_id=msg.table_id,
            cookie=msg.cookie,
            data=bytes(msg.data),
        )

    # ---- helpers ---------------------------------------------------------------------

    def _reply(self, msg: Any) -> None:
        channel = self._channel(msg)
        if channel is not None:
            channel.on_reply(msg.xid, bytes(msg.buf[: msg.msg_len]))

    def _channel(self, msg: Any) -> SwitchChannel | None:
        current = self._channels.get(msg.datapath.id)
        if current is None or current[0] is not msg.datapath:
            return None
        return current[1]

    def _port_map(self, datapath_id: int) -> dict[str, int]:
        return {name: no for no, name in self._ports.get(datapath_id, {}).items()}

    def _sink(self) -> SwitchEventSink:
        assert self.sink is not None, "start_openflow_controller() sets the sink"
        return self.sink


_started = threading.Lock()


def start_openflow_controller(
    sink: SwitchEventSink,
    *,
    host: str,
    port: int,
    tls: TlsListener | None = None,
    liveness: ProbeSchedule = SERVICE_SCHEDULE,
) -> Callable[[], None]:
    """Start os-ken (native threads) in this process, listening on host:port.

    With `tls`, switches also connect with mutual TLS on tls.host:tls.port, which
    leads each verified connection to the plaintext listener (see tls_front).
    `liveness`: when silent switches are probed and given up (benches relax it).

    os-ken keeps its configuration in a process-wide oslo.config object, so this
    can run once per process; the service is that process.
    """
    if not _started.acquire(blocking=False):
        raise RuntimeError("the OpenFlow controller already runs in this process")
    from os_ken import cfg

    cfg.CONF(
        args=["--ofp-listen-host", host, "--ofp-tcp-listen-port", str(port)],
        project="os_ken",
    )
    # No echo thread per connection (0 ends os-ken's at once): the keepalive probes
    # silent switches, closes dead connections and releases the blocked sender of a
    # connection the switch closed (controller.openflow.keepalive).
    cfg.CONF.set_override("maximum_unreplied_echo_requests", 0)
    keepalive = Keepalive(liveness)
    FabricOpenFlowApp.sink = sink
    FabricOpenFlowApp.keepalive = keepalive
    _install_raw_multipart_parser()
    install_receive_hook(keepalive)
    manager = app_manager.AppManager.get_instance()
    manager.load_apps([f"{__name__}", "os_ken.controller.ofp_handler"])
    contexts = manager.create_contexts()
    # os-ken's native hub starts plain (non-daemon) threads, which would keep any
    # process that ran the controller alive after it is done (a test run, a CLI).
    # A thread inherits daemon status from the thread that creates it, so start
    # os-ken from a daemon thread: every thread it spawns, now or later, is one.
    failure: list[BaseException] = []

    def instantiate() -> None:
        try:
            manager.instantiate_apps(**contexts)
        except BaseException as exc:  # re-raised in the caller's thread below
            failure.append(exc)

    starter = threading.Thread(target=instantiate, name="os-ken-start", daemon=True)
    starter.start()
    starter.join()
    if failure:
        raise failure[0]
    keepalive.start()
    front = None
    if tls is not None:
        front = TlsFront(tls, backend=(host, port))
        front.start()

    def stop() -> None:
        if front is not None:
            front.close()
        keepalive.stop()
        for app in list(manager.applications.values()):
            try:
                app.stop()
            except Exception:  # os-ken apps may already be half down at exit
                log.debug("stopping os-ken app %s failed", app, exc_info=True)

    return stop
