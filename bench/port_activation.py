"""Time from `POST /ports` (bound to a host) to the port being ACTIVE, p50/p95.

    .venv/bin/python -m bench.port_activation [--ports 40]

Root; a two-host lab and the real service as a child process. Each VM's
interface exists first; then one POST creates its port already bound
(host_id + interface) and the client waits with `?wait=active`. Reported: the
client-side wall time from POST to ACTIVE, and the service's own
`activation_seconds` (bound_at to the switch confirming the port's flows).
The peer for scale is OVN's published average for the comparable "port bound
to ovn-installed", about 1.1 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.ovs_lab import bench_network
from bench.stats import percentile
from lab.hosts import Lab
from tests.support.fabric import fabric_of, running_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=40)
    args = parser.parse_args()
    with (
        running_service(Path(tempfile.mkdtemp(prefix="ofab-bench-")) / "service") as service,
        Lab() as lab,
        fabric_of(lab, service) as fabric,
    ):
        client = fabric.client
        net = bench_network(fabric, "10.40.0.0/16")
        wall: list[float] = []
        service_side: list[float] = []
        for i in range(args.ports):
            host = "h1" if i % 2 == 0 else "h2"
            mac = f"02:00:00:40:{i // 256:02x}:{i % 256:02x}"
            ip = f"10.40.{i // 250}.{i % 250 + 2}"
            vm = lab.host(host).add_vm(f"v{i}", mac=mac, ip=ip, prefix_len=16)
            start = time.perf_counter()
            port = client.create(
                "ports", network_id=net, mac=mac, ips=[ip],
                host_id=fabric.host_ids[host], interface=vm.host_interface,
            )  # fmt: skip
            port = client.wait_port_active(port["id"], timeout=30)
            wall.append(time.perf_counter() - start)
            if port["status"] != "ACTIVE":
                raise SystemExit(f"port {i} did not become ACTIVE: {port}")
            service_side.append(float(port["activation_seconds"]))
    for label, values in (
        ("client POST -> ACTIVE", wall),
        ("service activation_seconds", service_side),
    ):
        print(
            f"{label:28s} p50 {statistics.median(values) * 1000:7.1f} ms   "
            f"p95 {percentile(values, 0.95) * 1000:7.1f} ms   (n={len(values)})"
        )


if __name__ == "__main__":
    main()
