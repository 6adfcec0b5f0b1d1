"""Liveness while a big flow table is read back: how long does a healthy switch look silent?

    .venv/bin/python -m bench.echo_readback [--flows 100000] [--rounds 3] [--measure-only]

Root; a one-host lab as in `bench.flow_install`. The table is filled by the
controller's own path (one bundle, `DatapathSync.apply`), then its read-back
(`DatapathSync.read_actual`, every flow and group) runs `--rounds` times under
the service's keepalive (`controller.openflow.probe_schedule.SERVICE_SCHEDULE`).
A sampler watches how long ago the keepalive last heard from the switch (any
message counts): the longest such silence is what liveness saw of the healthy but
busy switch; the run also says whether the connection was (falsely) declared dead.
`--measure-only` never gives up on the connection and sends an echo request every
0.1 s instead, timing each reply, to see how late the echo replies themselves are.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from os_ken.base import app_manager

from api.launcher import free_tcp_port
from bench.encode_bench import bench_flows
from bench.flow_install import FirstSwitch, flow_count, switch_of
from bench.report import Figure, measured
from controller.openflow.app import FabricOpenFlowApp, start_openflow_controller
from controller.openflow.channel import SwitchChannel
from controller.openflow.keepalive import ECHO_REQUEST, Keepalive, enqueue_nowait
from controller.openflow.probe_schedule import SERVICE_SCHEDULE, ProbeSchedule
from lab.hosts import Lab
from tests.support.reliability import record

SCHEDULE = SERVICE_SCHEDULE


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


class SilenceWatch:
    """Samples every `period` seconds how long the switch has been silent.

    With `echo_every`, it also sends an echo request that often (one at a time)
    and the longest wait for a reply counts instead: echo replies only.
    """

    def __init__(self, keepalive: Keepalive, dp: Any, *, echo_every: float | None = None) -> None:
        self._keepalive = keepalive
        self._dp = dp
        self._echo_every = echo_every
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SilenceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        if self._echo_every is not None:
            self._time_echoes(self._echo_every)
            return
        while not self._stop.wait(0.005):
            silent = self._keepalive.silent_for(self._dp)
            self.longest = max(self.longest, silent or 0.0)

    def _time_echoes(self, every: float) -> None:
        replies = self._keepalive.last_echo_reply
        while not self._stop.is_set():
            sent = time.monotonic()
            if not enqueue_nowait(self._dp, ECHO_REQUEST):
                self._stop.wait(0.005)
                continue
            while replies.get(self._dp, 0.0) < sent and not self._stop.wait(0.005):
                self.longest = max(self.longest, time.monotonic() - sent)
            self.longest = max(self.longest, replies.get(self._dp, sent) - sent)
            self._stop.wait(every)


@dataclass
class Silences:
    """Longest silence (s) idle, during the install and during each read-back."""

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
    sink = Disconnects()
    port = free_tcp_port()
    patient = ProbeSchedule(SCHEDULE.probe_after, dead_after=1e9, tick=SCHEDULE.tick)
    start_openflow_controller(
        sink, host="127.0.0.1", port=port, liveness=patient if measure_only else SCHEDULE
    )
    keepalive = FabricOpenFlowApp.keepalive
    assert keepalive is not None
    echo_every = 0.1 if measure_only else None
    what = "echo replies only" if measure_only else "any message counts as an answer"
    with Lab() as lab, switch_of(lab, sink, port) as (host, sync):
        dp = _datapath()
        flows = bench_flows(flows_n)
        with SilenceWatch(keepalive, dp, echo_every=echo_every) as install:
            start = time.perf_counter()
            sync.read_actual()
            sync.apply(flows, [])
            took = time.perf_counter() - start
        assert flow_count(host) == flows_n
        with SilenceWatch(keepalive, dp, echo_every=echo_every) as idle:
            time.sleep(5)
        print(
            f"{flows_n:,} flows, silent switches probed after {SCHEDULE.probe_after:g} s, "
            + (
                "never given up"
                if measure_only
                else f"dead after {SCHEDULE.dead_after:g} s of silence"
            )
            + f" ({what})"
        )
        print(f"  idle 5 s: longest silence {idle.longest:.2f} s")
        print(f"  install (one bundle): {took:.2f} s, longest silence {install.longest:.2f} s")
        longest = install.longest
        result = Silences(idle=idle.longest, install=install.longest, install_s=took)
        for n in range(rounds):
            with SilenceWatch(keepalive, dp, echo_every=echo_every) as busy:
                start = time.perf_counter()
                sync.read_actual()
                took = time.perf_counter() - start
            silent = busy.longest
            longest = max(longest, silent)
            result.readbacks.append(silent)
            result.readback_s.append(took)
            print(f"  read-back {n + 1}: {took:.2f} s, longest silence {silent:.2f} s")
        result.lost = sink.lost
        print(f"  connection declared dead during the run: {sink.lost} time(s)")
        if not record_it:
            return result
        record(
            "Liveness",
            f"healthy switch, {flows_n:,} flows installed and read back "
            f"{rounds}x: longest it looked silent ({what})",
            longest,
            "s",
            requirement=f"< {SCHEDULE.dead_after:g} s (dead after that much silence)"
            if not measure_only
            else "context: why any message counts",
            source="python -m bench.echo_readback" + (" --measure-only" if measure_only else ""),
        )
    return result


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py); RELIABILITY.md is left to `main`."""
    flows_n = 50_000 if quick else 100_000
    result = measure(flows_n, 2 if quick else 3, measure_only=False, record_it=False)
    bound = SCHEDULE.dead_after
    silent = measured(
        f"healthy switch reading back {flows_n:,} flows: longest it looked silent", "s",
        result.readbacks, peer="the same switch idle for 5 s (probed when silent "
        f"{SCHEDULE.probe_after:g} s)", peer_median=result.idle,
        goal=f"< {bound:g} s (dead after that much silence)",
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
