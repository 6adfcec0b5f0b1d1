"""Packets lost while a real guest migrates live between two hypervisors.

    .venv/bin/python -m bench.migration [--migrations 6] [--interval 0.01]

Root only. Builds what tests/e2e/test_guest.py builds (tests/support/guest_lab.py:
three simulated hosts, a libvirtd on h1 and h2, the service, a tiny Linux guest on a
VXLAN network, a peer VM namespace on h3), then migrates the guest back and forth
while the peer pings it every `interval` seconds. Per migration:

- lost: echo requests without a reply (ping from the peer, nothing else in flight);
- outage: lost x interval, the time the guest could not be reached;
- outage: the longest silence between two replies (minus one interval);
- QEMU downtime: the guest's own stop time reported by libvirt (`domjobinfo
  --completed`: the last RAM pages and device state are copied while it is stopped).
  Nobody can answer then, whatever the network does: it is the peer figure;
- resumed -> first reply: from the destination's RESUMED event (`virsh event
  --timestamp`) to the first reply the peer gets; split by a capture on the
  destination's underlay into resumed -> first echo request reaching the destination
  (the network's share: what the port's move costs; the goal is one round trip, what
  OVN's `activation-strategy=rarp` loses, the destination's flows installed
  beforehand and activated by the guest's first frame) and the guest's own time to
  answer it (a TCG guest catching up after its stop).
- bind -> confirmed: from the service log, the destination's flows confirmed after
  the watcher moved the binding (the controller's part of the network share).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from bench.report import Figure, measured
from lab.hosts import HOST_UNDERLAY_IF, SimHost
from lab.netns import in_netns
from tests.support.eventually import eventually
from tests.support.guest_lab import WAIT, GuestLab, guest_lab, pinging, resume_events

_CONFIRMED = re.compile(r"port (\S+) moved to host (\S+): confirmed there after (\d+) ms")


@contextlib.contextmanager
def _echoes_on_underlay(host: SimHost) -> Iterator[list[tuple[float, str]]]:
    """(time, "request"|"reply") of the ICMP echoes inside VXLAN crossing `host`'s underlay
    link while the block runs (tcpdump decodes VXLAN on UDP 4789)."""
    found: list[tuple[float, str]] = []
    capture = subprocess.Popen(
        in_netns(
            host.netns, ["tcpdump", "-l", "-n", "-tt", "-i", HOST_UNDERLAY_IF, "udp port 4789"]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        time.sleep(0.5)  # listening
        yield found
    finally:
        capture.terminate()
        out, _ = capture.communicate(timeout=10)
        stamp = 0.0
        for line in out.splitlines():
            with contextlib.suppress(ValueError, IndexError):
                stamp = float(line.split()[0])  # the outer packet's line; the inner follows
            for kind in ("request", "reply"):
                if f"ICMP echo {kind}" in line:
                    found.append((stamp, kind))


def _one(g: GuestLab, source: str, destination: str, interval: float) -> dict[str, float]:
    assert g.peer.wait_for_ping(g.guest_ip(), timeout=WAIT), "guest unreachable before"
    log_mark = len(g.service.log_path.read_text(errors="replace").splitlines())
    with (
        _echoes_on_underlay(g.hosts[destination]) as echoes,
        resume_events(g.hypervisors[destination]) as resumed,
        pinging(g.peer, g.guest_ip(), interval=interval) as ping,
    ):
        time.sleep(0.5)
        g.migrate(source, destination)
        eventually(
            lambda: (
                g.client.get("ports", g.port["id"])["binding"]["host_id"] == g.host_ids[destination]
            ),
            f"the port bound to {destination}",
            timeout=WAIT,
        )
        assert g.client.wait_port_active(g.port["id"], timeout=WAIT)["status"] == "ACTIVE"
        time.sleep(1.0)
    run = ping[0]
    before, after = run.longest_gap()
    log = g.service.log_path.read_text(errors="replace").splitlines()[log_mark:]
    confirmed = [float(m.group(3)) for line in log if (m := _CONFIRMED.search(line))]
    bound = [_log_time(line) for line in log if f"libvirt {destination}: bound port" in line]
    nan = float("nan")
    resume = resumed[-1] if resumed else nan
    first_request = next((t for t, kind in echoes if kind == "request" and t > resume), nan)
    first_reply = next((t for t, kind in echoes if kind == "reply" and t > first_request), nan)
    return {
        "lost": float(run.lost),
        "outage": (after - before) * 1000 - interval * 1000,
        "downtime": g.downtime_ms(destination) or float("nan"),
        "network": (after - resume) * 1000,
        "arrives": (first_request - resume) * 1000,
        "guest": (first_reply - first_request) * 1000,
        "rtt": run.rtt_avg_ms or 0.0,
        "confirmed": confirmed[-1] if confirmed else float("nan"),
        "bound": (bound[-1] - resumed[-1]) * 1000 if bound and resumed else float("nan"),
    }


def _log_time(line: str) -> float:
    """The wall-clock time a service log line was written (the service logs local time)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def measure(migrations: int, interval: float) -> list[dict[str, float]]:
    samples = []
    with (
        tempfile.TemporaryDirectory(prefix="ovsf-bench-migration-") as tmp,
        guest_lab(Path(tmp)) as g,
    ):
        where = "h1"
        for n in range(migrations):
            to = "h2" if where == "h1" else "h1"
            sample = _one(g, where, to, interval)
            print(
                f"migration {n + 1} {where}->{to}: lost {sample['lost']:.0f} "
                f"(outage {sample['outage']:.0f} ms), "
                f"QEMU downtime {sample['downtime']:.0f} ms, "
                f"resumed -> first reply {sample['network']:.0f} ms (first request at the "
                f"destination {sample['arrives']:.0f} ms, guest answers it in "
                f"{sample['guest']:.0f} ms), rtt {sample['rtt']:.2f} ms, "
                f"resumed->bound {sample['bound']:.0f} ms, "
                f"bound->confirmed {sample['confirmed']:.0f} ms",
                flush=True,
            )
            samples.append(sample)
            where = to
    return samples


def figures(samples: list[dict[str, float]], interval: float) -> list[Figure]:
    def column(name: str) -> list[float]:
        return [s[name] for s in samples]

    rtt = statistics.median(column("rtt"))
    network = statistics.median(column("arrives"))
    bound = rtt + interval * 1000  # one round trip, at the ping's resolution
    return [
        measured(
            f"live migration: guest unreachable (ping every {interval * 1000:g} ms)",
            "ms",
            column("outage"),
            peer="QEMU's own downtime (guest stopped), same migrations",
            peer_values=column("downtime"),
            notes=f"lost {statistics.median(column('lost')):.0f} packets median",
        ),
        measured(
            "live migration: guest resumed on the destination -> first reply to the peer",
            "ms",
            column("network"),
        ),
        measured(
            "live migration: guest resumed -> first echo request reaches the destination",
            "ms",
            column("arrives"),
            goal=f"<= one round trip + ping interval ({bound:.0f} ms), as OVN rarp",
            met=network <= bound,
            notes="the network's share: libvirt event, watcher binding, destination flows "
            "confirmed, then every other host (tcpdump on the destination's underlay)",
        ),
        measured(
            "live migration: first request at the destination -> guest's reply leaves it",
            "ms",
            column("guest"),
            notes="the TCG guest catching up after its stop; not the network",
        ),
        measured(
            "live migration: guest resumed -> binding moved (libvirt event, watcher, SQL)",
            "ms",
            column("bound"),
        ),
        measured(
            "live migration: binding moved -> destination flows confirmed",
            "ms",
            column("confirmed"),
            notes="the controller's part of the network's share",
        ),
    ]


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py)."""
    interval = 0.01
    return figures(measure(2 if quick else 6, interval), interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=6)
    parser.add_argument("--interval", type=float, default=0.01, help="ping interval, seconds")
    args = parser.parse_args()
    for figure in figures(measure(args.migrations, args.interval), args.interval):
        print(figure)


if __name__ == "__main__":
    main()
