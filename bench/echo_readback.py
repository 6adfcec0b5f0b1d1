"""Echo replies while a big flow table is read back: how late can they be?

    .venv/bin/python -m bench.echo_readback [--flows 100000] [--rounds 3] [--measure-only]

Root; a one-host lab as in `bench.flow_install`. The table is filled by the
controller's own path (one bundle, `DatapathSync.apply`), then its read-back
(`DatapathSync.read_actual`, every flow and group) runs `--rounds` times with
the service's echo settings (`controller.openflow.app.ECHO_INTERVAL`,
`ECHO_MISSES`). A sampler watches os-ken's list of unanswered echo requests:
the longest time one stayed there is how long the healthy but busy switch
looked silent to liveness (the app counts any message from the switch as an
answer); the run also says whether the connection was (falsely) declared dead.
`--measure-only` counts only echo replies as answers and never gives up on the
connection, to see how late the echo replies themselves are.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from os_ken import cfg
from os_ken.base import app_manager

from api.launcher import free_tcp_port
from bench.encode_bench import bench_flows
from bench.flow_install import FirstSwitch, flow_count, switch_of
from controller.openflow import app as openflow_app
from controller.openflow.app import (
    ECHO_INTERVAL,
    ECHO_MISSES,
    FabricOpenFlowApp,
    start_openflow_controller,
)
from controller.openflow.channel import SwitchChannel
from lab.hosts import Lab
from tests.support.reliability import record


class Disconnects(FirstSwitch):
    lost = 0

    def switch_disconnected(self, datapath_id: int, channel: SwitchChannel) -> None:
        self.lost += 1


def _datapath() -> Any:
    for app in app_manager.AppManager.get_instance().applications.values():
        if isinstance(app, FabricOpenFlowApp):
            for dp, _channel in app._channels.values():
                return dp
    raise SystemExit("no datapath")


class EchoWatch:
    """Samples the datapath's unanswered echo xids every `period` seconds."""

    def __init__(self, dp: Any, period: float = 0.005) -> None:
        self._dp = dp
        self._period = period
        self._first_seen: dict[int, float] = {}
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EchoWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            waiting = set(self._dp.unreplied_echo_requests)
            for xid in waiting - set(self._first_seen):
                self._first_seen[xid] = now
            for xid in set(self._first_seen) - waiting:
                self.longest = max(self.longest, now - self._first_seen.pop(xid))
            for seen in self._first_seen.values():
                self.longest = max(self.longest, now - seen)
            time.sleep(self._period)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure-only", action="store_true")
    args = parser.parse_args()

    sink = Disconnects()
    port = free_tcp_port()
    start_openflow_controller(sink, host="127.0.0.1", port=port)
    if args.measure_only:  # the datapath reads this when the switch connects
        cfg.CONF.set_override("maximum_unreplied_echo_requests", 1_000_000)
        openflow_app._heard_from = lambda datapath: None
    with Lab() as lab, switch_of(lab, sink, port) as (host, sync):
        dp = _datapath()
        time.sleep(3 * ECHO_INTERVAL)
        flows = bench_flows(args.flows)
        with EchoWatch(dp) as install:
            start = time.perf_counter()
            sync.read_actual()
            sync.apply(flows, [])
            took = time.perf_counter() - start
        assert flow_count(host) == args.flows
        with EchoWatch(dp) as idle:
            time.sleep(5)
        print(
            f"{args.flows:,} flows, echo every {ECHO_INTERVAL} s, "
            f"dead after {'never' if args.measure_only else ECHO_MISSES + 1} unanswered"
        )
        print(f"  idle 5 s: longest unanswered echo {idle.longest:.2f} s")
        print(
            f"  install (one bundle): {took:.2f} s, longest unanswered echo {install.longest:.2f} s"
        )
        longest = install.longest
        for n in range(args.rounds):
            with EchoWatch(dp) as busy:
                start = time.perf_counter()
                sync.read_actual()
                took = time.perf_counter() - start
            silent = busy.longest
            longest = max(longest, silent)
            print(f"  read-back {n + 1}: {took:.2f} s, longest unanswered echo {silent:.2f} s")
        what = "echo replies only" if args.measure_only else "any message counts as an answer"
        record(
            "Liveness",
            f"healthy switch, {args.flows:,} flows installed and read back "
            f"{args.rounds}x: longest it looked silent ({what})",
            longest,
            "s",
            requirement=f"< {ECHO_MISSES * ECHO_INTERVAL:g} s (dead after "
            f"{ECHO_MISSES + 1} unanswered echoes {ECHO_INTERVAL:g} s apart)"
            if not args.measure_only
            else "context: why any message counts",
            source="python -m bench.echo_readback"
            + (" --measure-only" if args.measure_only else ""),
        )
        print(f"  connection declared dead during the run: {sink.lost} time(s)")


if __name__ == "__main__":
    main()
