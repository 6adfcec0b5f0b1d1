"""Data plane: iperf3 TCP between two VMs on two hosts through the service's flows,
next to the same path through one `actions=NORMAL` flow per switch, in the same run.

    .venv/bin/python -m bench.iperf [--seconds 5] [--repeats 3]

Root; a two-host lab (userspace datapath, VXLAN between the hosts over the lab's
underlay) and the real service as a child process. One VM on each host (MTU 1400,
checksum offload off, as every lab VM), both ports created bound and waited
ACTIVE. Then the service is stopped (the switches keep its flows: fail_mode=secure,
so the controller's own CPU use is out of both sides) and, --repeats times,
alternately: each br-int gets the service's flows back (`replace-flows` of what
it installed), or the peer, one `priority=0,actions=NORMAL` flow; then `iperf3 -c`
in h1's VM against `iperf3 -s` in h2's VM for --seconds (the first second, TCP's
slow start, omitted). Same VMs, veths, tunnel ports and underlay. Goal (issue 11):
ours >= 0.9x the peer. Both directions of the path are the userspace datapath
sharing this machine's two cores with iperf3 itself, so the absolute figure is
CPU-bound; the ratio is the point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.ovs_lab import bench_network
from bench.report import Figure, measured
from lab.hosts import Lab, SimHost, SimVM
from tests.support.fabric import fabric_of, running_service

IPERF_PORT = 5201
DATAPATH_DUMP: Path | None = None  # --dump-datapath: h1's datapath flows under load
GOAL_RATIO = 0.9


@contextlib.contextmanager
def iperf_server(vm: SimVM) -> Iterator[None]:
    """`iperf3 -s` in `vm`'s namespace for the duration of the block."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", vm.netns, "iperf3", "-s", "-p", str(IPERF_PORT), "-B", str(vm.ip)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while f":{IPERF_PORT}" not in vm.run("ss", "-ltn", check=False).stdout:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("iperf3 -s did not start listening")
            time.sleep(0.05)
        yield
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def gbits_per_second(client: SimVM, server: SimVM, seconds: int) -> float:
    """One iperf3 TCP run from `client` to `server`: the receiver's rate, Gbit/s."""
    assert server.ip is not None
    result = client.run(
        "iperf3", "-c", server.ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-O", "1", "-J",
        check=False, timeout=seconds + 60,
    )  # fmt: skip
    report = json.loads(result.stdout or "{}")
    if "error" in report or result.returncode != 0:
        raise RuntimeError(f"iperf3 failed: {report.get('error', result.stderr.strip())}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def measure(seconds: int, repeats: int) -> tuple[list[float], list[float]]:
    """(ours, peer): Gbit/s of each run, through the service's flows and through NORMAL."""
    with (
        tempfile.TemporaryDirectory(prefix="ofab-iperf-") as workdir,
        running_service(Path(workdir) / "service") as service,
        Lab() as lab,
        fabric_of(lab, service) as fabric,
    ):
        net = bench_network(fabric, "10.70.0.0/24")
        vms: list[SimVM] = []
        for index, host in enumerate(("h1", "h2")):
            mac, ip = f"02:00:00:70:00:{index + 1:02x}", f"10.70.0.{index + 10}"
            vm = lab.host(host).add_vm(f"i{index}", mac=mac, ip=ip, prefix_len=24)
            port = fabric.client.create(
                "ports", network_id=net, mac=mac, ips=[ip],
                host_id=fabric.host_ids[host], interface=vm.host_interface,
            )  # fmt: skip
            if fabric.client.wait_port_active(port["id"], timeout=60)["status"] != "ACTIVE":
                raise RuntimeError(f"the port of {vm.name} did not become ACTIVE")
            vms.append(vm)
        client, server = vms
        hosts = [lab.host("h1"), lab.host("h2")]
        # The service's flows stay on the switches (fail_mode=secure) without it: both
        # sides are then measured on an equal machine, without the controller's CPU.
        service.stop()
        ours_label, peer_label = "service's flows", "actions=NORMAL"
        tables = {
            ours_label: ["\n".join(host.dump_flows()) + "\n" for host in hosts],
            peer_label: ["priority=0,actions=NORMAL\n"] * len(hosts),
        }
        counts = [len(text.splitlines()) for text in tables[ours_label]]
        print(f"service's flows on h1, h2: {counts}", flush=True)
        rates: dict[str, list[float]] = {label: [] for label in tables}
        with iperf_server(server):
            # Alternated, so drifting load on a shared machine hits both alike.
            for _ in range(repeats):
                for label, flows in tables.items():
                    for host, text in zip(hosts, flows, strict=True):
                        host.ofctl("--bundle", "replace-flows", "br-int", "-", input=text)
                    if not client.wait_for_ping(str(server.ip), timeout=30):
                        raise RuntimeError(f"the VMs do not reach each other through {label}")
                    if DATAPATH_DUMP is not None and label == ours_label:
                        dump_datapath(client, server, hosts[0], DATAPATH_DUMP)
                    rates[label].append(gbits_per_second(client, server, seconds))
                    print(f"  {label}: {rates[label][-1]:.3f} Gbit/s", flush=True)
    return rates[ours_label], rates[peer_label]


def dump_datapath(client: SimVM, server: SimVM, host: SimHost, out: Path) -> None:
    """`host`'s datapath flows while iperf3 runs (which megaflows the traffic hits)."""
    load = subprocess.Popen(
        ["ip", "netns", "exec", client.netns, "iperf3", "-c", str(server.ip),
         "-p", str(IPERF_PORT), "-t", "3"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.5)
    out.write_text(host.appctl("dpctl/dump-flows"))
    load.wait()


def figure(ours: list[float], peer: list[float], seconds: int) -> Figure:
    result = measured(
        f"iperf3 TCP, VM on h1 -> VM on h2 (VXLAN), {seconds} s runs", "Gbit/s", ours,
        peer="the same path, one actions=NORMAL flow per br-int", peer_values=peer,
        goal=f">= {GOAL_RATIO}x", notes=f"peer runs: {', '.join(f'{p:.3f}' for p in peer)}",
    )  # fmt: skip
    from dataclasses import replace

    return replace(result, met=result.ratio is not None and result.ratio >= GOAL_RATIO)


def run(quick: bool) -> list[Figure]:
    """The suite's entry point (bench/run.py)."""
    seconds, repeats = (3, 2) if quick else (5, 3)
    ours, peer = measure(seconds, repeats)
    return [figure(ours, peer, seconds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dump-datapath", type=Path, help="write h1's datapath flows here")
    args = parser.parse_args()
    global DATAPATH_DUMP
    DATAPATH_DUMP = args.dump_datapath
    ours, peer = measure(args.seconds, args.repeats)
    result = figure(ours, peer, args.seconds)
    print(
        f"service's flows {statistics.median(ours):.3f} Gbit/s, actions=NORMAL "
        f"{statistics.median(peer):.3f} Gbit/s: {result.ratio:.2f}x (goal >= {GOAL_RATIO}x)"
    )


if __name__ == "__main__":
    main()
