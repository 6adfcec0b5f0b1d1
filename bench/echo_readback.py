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
from dataclasses import dataclass, field, replace
from typing import Any

from os_ken import cfg
from os_ken.base import app_manager

from api.launcher import free_tcp_port
from bench.encode_bench import bench_flows
from bench.flow_install import FirstSwitch, flow_count, switch_of
from bench.report import Figure, measured
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


@dataclass
class Silences:
    """Longest unanswered echo (s) idle, during the install and during each read-back."""

    idle: float
    install: float
    install_s: float
    readbacks: list[float] = field(default_factory=list)
    readback_s: list[float] = field(default_factory=list)
    lost: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure-only", action="store_true")
    args = parser.parse_args()
    measure(args.flows, args.rounds, measure_only=args.measure_only, record_it=True)


def measure(flows_n: int, rounds: int, *, measure_only: bool, record_it: bool) -> Silences:
    """Install `flows_n` flows, read them back `rounds` times; what liveness saw."""
    args = argparse.Namespace(flows=flows_n, rounds=rounds, measure_only=measure_only)
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
        result = Silences(idle=idle.longest, install=install.longest, install_s=took)
        for n in range(args.rounds):
            with EchoWatch(dp) as busy:
                start = time.perf_counter()
                sync.read_actual()
                took = time.perf_counter() - start
            silent = busy.longest
            longest = max(longest, silent)
            result.readbacks.append(silent)
            result.readback_s.append(took)
            print(f"  read-back {n + 1}: {took:.2f} s, longest unanswered echo {silent:.2f} s")
        what = "echo replies only" if args.measure_only else "any message counts as an answer"
        result.lost = sink.lost
        print(f"  connection declared dead during the run: {sink.lost} time(s)")
        if not record_it:
            return result
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
    return result


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py); RELIABILITY.md is left to `main`."""
    flows_n = 50_000 if quick else 100_000
    result = measure(flows_n, 2 if quick else 3, measure_only=False, record_it=False)
    bound = ECHO_MISSES * ECHO_INTERVAL
    silent = measured(
        f"healthy switch reading back {flows_n:,} flows: longest it looked silent", "s",
        result.readbacks, peer="the same switch idle for 5 s", peer_median=result.idle,
        goal=f"< {bound:g} s (dead after {ECHO_MISSES + 1} unanswered echoes)",
        notes=f"connection declared dead: {result.lost} time(s); during the install "
        f"({result.install_s:.2f} s) {result.install:.2f} s",
    )  # fmt: skip
    return [
        replace(silent, met=max(result.readbacks) < bound and result.lost == 0),
        measured(
            f"read-back of {flows_n:,} flows (DatapathSync.read_actual)", "s", result.readback_s
        ),
    ]


if __name__ == "__main__":
    main()
