"""Time from libvirt's STARTED event to the VM port's flows confirmed on the switch.

    .venv/bin/python -m bench.libvirt_bench [--domains 20] [--mode mac|interfaceid|metadata]

Root only. Starts what tests/e2e/test_libvirt.py starts (OVS on
/var/run/openvswitch, libvirtd, the real service with its libvirt watcher),
then for each of N domains, one after another: start it through libvirt, note
the wall-clock time of its STARTED event (received here, on an event
connection of our own), wait until the API reports the port ACTIVE and read
the controller's own timestamps: `bound_at` (the watcher wrote the binding)
and `status_at` (the switch confirmed the port's flows). The domain is then
destroyed and its port seen unbound before the next one starts.

Printed per domain and as p50/p95 over all: STARTED -> bound (the watcher),
bound -> confirmed (the controller: OVSDB, OpenFlow bundle, status), and
STARTED -> confirmed, the figure of the issue (goal: p95 under 500 ms; OVN
publishes about 1.1 s on average for "port bound to ovn-installed").
libvirt emits RESUMED just before STARTED and the watcher acts on either, so
STARTED -> bound can be a few milliseconds below zero.

Modes: `mac` (default) an ethernet tap the service plugs itself into the
bridge; `interfaceid` a tap libvirt plugs (virtualport openvswitch) naming
the port; `metadata` the same with the port created from domain metadata.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import libvirt

from api.client import ApiError, FabricClient
from api.launcher import ServiceProcess
from tests.support.libvirt_env import (
    LIBVIRT_URI,
    OVSDB_REMOTE,
    Domain,
    Domains,
    local_host,
    network_metadata,
    ovs_nic,
    random_mac,
    run_token,
    tap_nic,
)

WAIT_S = 30.0


@dataclass(frozen=True)
class Sample:
    started_to_bound: float
    bound_to_confirmed: float
    started_to_confirmed: float


class StartedEvents:
    """Wall-clock time of each domain's STARTED event, from a libvirt connection of our own."""

    def __init__(self) -> None:
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=self._loop, daemon=True).start()
        self._connection = libvirt.openReadOnly(LIBVIRT_URI)
        self._times: dict[str, float] = {}
        self._seen = threading.Condition()
        self._connection.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )

    @staticmethod
    def _loop() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    def _on_lifecycle(
        self, _conn: Any, domain: Any, event: int, _detail: int, _opaque: Any
    ) -> None:
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            now = time.time()
            with self._seen:
                self._times[domain.UUIDString()] = now
                self._seen.notify_all()

    def wait(self, uuid: str) -> float:
        with self._seen:
            if not self._seen.wait_for(lambda: uuid in self._times, timeout=WAIT_S):
                raise TimeoutError(f"no STARTED event for {uuid}")
            return self._times[uuid]

    def close(self) -> None:
        self._connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--mode", choices=("mac", "interfaceid", "metadata"), default="mac")
    args = parser.parse_args()

    with local_host() as (ovs, _daemons), tempfile.TemporaryDirectory() as workdir:
        bridge = f"lvb{run_token()}"
        service = ServiceProcess(
            Path(workdir) / "service",
            datapath_type="netdev",
            extra_env={
                "OVS_FABRIC_LIBVIRT_ENABLED": "true",
                "OVS_FABRIC_INTEGRATION_BRIDGE": bridge,
            },
        )
        domains = Domains()
        events: StartedEvents | None = None
        try:
            service.start()
            with FabricClient(service.base_url, service.admin_token) as client:
                events = StartedEvents()
                samples = run(client, ovs, domains, events, bridge, args.domains, args.mode)
        finally:
            domains.cleanup()
            if events is not None:
                events.close()
            service.stop()
            ovs.delete_bridge(bridge)
    report(samples, args.mode)


def run(
    client: FabricClient,
    ovs: Any,
    domains: Domains,
    events: StartedEvents,
    bridge: str,
    count: int,
    mode: str,
) -> list[Sample]:
    host = client.create("hosts", name="local", ovsdb_remote=OVSDB_REMOTE, libvirt_uri=LIBVIRT_URI)
    tenant = client.create("tenants", name="bench")
    network = client.create(
        "networks", tenant_id=tenant["id"], name="n", type="vlan", cidr="10.50.0.0/16"
    )
    wait_until(lambda: client.get("hosts", host["id"])["openflow_connected"], "the switch")
    wait_until(lambda: ovs.bridge_exists(bridge), "the integration bridge")
    wait_until(lambda: watched(client, host["id"]), "the libvirt watcher")
    samples = []
    for index in range(count):
        mac = random_mac()
        metadata = ""
        port_id: str | None = None
        if mode == "metadata":
            nic = ovs_nic(bridge, mac)
            metadata = network_metadata(network["id"])
        else:
            port_id = client.create("ports", network_id=network["id"], mac=mac)["id"]
            nic = (
                ovs_nic(bridge, mac, port_id)
                if mode == "interfaceid"
                else tap_nic(f"tvb{run_token()}", mac)
            )
        domain = domains.define([nic], metadata=metadata, start=False)
        domain.start()
        started = events.wait(domain.uuid)
        if port_id is None:
            port_id = wait_for_value(
                lambda d=domain: first_port_of(client, d),
                "the created port",
            )
        port = client.wait_port_active(port_id, timeout=WAIT_S)
        if port["status"] != "ACTIVE":
            raise RuntimeError(f"port of {domain.name} not ACTIVE: {port}")
        bound_at = timestamp(port["binding"]["bound_at"])
        confirmed_at = timestamp(port["status_at"])
        sample = Sample(
            started_to_bound=bound_at - started,
            bound_to_confirmed=confirmed_at - bound_at,
            started_to_confirmed=confirmed_at - started,
        )
        samples.append(sample)
        print(
            f"{index + 1:3d} {domain.name:>18s}  started->bound {ms(sample.started_to_bound)}"
            f"  bound->confirmed {ms(sample.bound_to_confirmed)}"
            f"  started->confirmed {ms(sample.started_to_confirmed)}",
            flush=True,
        )
        domain.destroy()
        wait_until(
            lambda p=port_id: unbound_or_gone(client, p),
            f"the port of {domain.name} released",
        )
    return samples


def watched(client: FabricClient, host_id: str) -> bool:
    found = client.request("GET", "/vm-interfaces", params={"host_id": host_id})
    return any(h["connected"] for h in found["hosts"])


def first_port_of(client: FabricClient, domain: Domain) -> str | None:
    ports = client.list("ports", vm_id=domain.uuid)
    return str(ports[0]["id"]) if ports else None


def unbound_or_gone(client: FabricClient, port_id: str) -> bool:
    try:
        port = client.get("ports", port_id)
    except ApiError as exc:
        if exc.status == 404:
            return True
        raise
    return port["binding"]["host_id"] is None


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_value(get: Any, what: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while (value := get()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return str(value)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def report(samples: list[Sample], mode: str) -> None:
    print(f"\n{len(samples)} domains, mode {mode}:")
    for label, values in (
        ("STARTED -> bound in SQL (watcher)", [s.started_to_bound for s in samples]),
        ("bound -> flows confirmed (controller)", [s.bound_to_confirmed for s in samples]),
        ("STARTED -> flows confirmed", [s.started_to_confirmed for s in samples]),
    ):
        print(
            f"  {label:40s} p50 {ms(percentile(values, 0.5))}  p95 {ms(percentile(values, 0.95))}"
            f"  mean {ms(statistics.fmean(values))}  max {ms(max(values))}"
        )


if __name__ == "__main__":
    main()
