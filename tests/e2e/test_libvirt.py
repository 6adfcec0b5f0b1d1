"""libvirt VMs are attached, tagged and wired with no manual step (issue 4).

A real libvirtd starts real QEMU domains (TCG) on the local host's OVS; the
real service runs as a child process with its libvirt watcher and controller.
Each test ends with what an operator would check: the OVS port and its
external_ids, flows that reference the tap's ofport, and the port ACTIVE in
the API; or, after a stop, all of it gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from api.client import ApiError
from tests.support.eventually import eventually
from tests.support.libvirt_env import (
    LIBVIRT_URI,
    Domain,
    Domains,
    LibvirtDaemons,
    LibvirtService,
    LocalOvs,
    flows_on_port,
    libvirt_service,
    local_host,
    network_metadata,
    ovs_nic,
    random_mac,
    run_token,
    tap_nic,
)
from tests.support.metrics import scrape_service, value

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WIRE_TIMEOUT = 30.0  # bounds the wait only; nothing here asserts speed


@pytest.fixture(scope="module")
def local() -> Iterator[tuple[LocalOvs, LibvirtDaemons]]:
    with local_host() as env:
        yield env


@dataclass
class LibvirtFabric(LibvirtService):
    ovs: LocalOvs
    daemons: LibvirtDaemons
    domains: Domains

    def new_port(self, mac: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"network_id": self.network_id}
        if mac is not None:
            body["mac"] = mac
        return self.client.create("ports", **body)

    def wait_wired(self, port_id: str, domain: Domain, mac: str, *, owned: bool) -> str:
        """Assert the port ends up ACTIVE on this host, tagged and with flows; return the tap."""
        port = self.client.wait_port_active(port_id, timeout=WIRE_TIMEOUT)
        tap = domain.taps()[mac]
        assert port["status"] == "ACTIVE", f"{port}\n{self.service.log_tail()}"
        assert port["binding"]["host_id"] == self.host_id
        assert port["binding"]["interface"] == tap
        assert port["binding"]["vm_id"] == domain.uuid
        assert tap in self.ovs.ports(self.bridge)
        ids = self.ovs.external_ids(tap)
        assert ids["iface-id"] == port_id
        assert ids["attached-mac"] == mac
        assert ids["vm-id"] == domain.uuid
        assert (ids.get("ovs-fabric-owned") == "true") is owned, ids
        ofport = self.ovs.ofport(tap)
        assert ofport > 0
        assert flows_on_port(self.ovs.dump_flows(self.bridge), ofport), (
            f"no flow references ofport {ofport} of {tap}"
        )
        return tap

    def wait_gone(self, tap: str, ofport: int) -> None:
        eventually(
            lambda: tap not in self.ovs.ports(self.bridge),
            f"OVS port {tap} removed",
            timeout=WIRE_TIMEOUT,
        )
        eventually(
            lambda: not flows_on_port(self.ovs.dump_flows(self.bridge), ofport),
            f"flows of ofport {ofport} removed",
            timeout=WIRE_TIMEOUT,
        )

    def wait_unbound(self, port_id: str, what: str) -> None:
        eventually(
            lambda: self.client.get("ports", port_id)["binding"]["host_id"] is None,
            what,
            timeout=WIRE_TIMEOUT,
        )

    def vm_interfaces(self, state: str | None = None) -> list[dict[str, Any]]:
        host = self.watched_host(state)
        assert host is not None, "the host is not watched"
        interfaces: list[dict[str, Any]] = host["interfaces"]
        return interfaces

    def sole_vm_interface(self) -> tuple[str, str, str]:
        """(state, port id, matching rule) of the one VM interface the watcher reports."""
        (seen,) = self.vm_interfaces()
        return seen["state"], seen["port_id"], seen["match"]

    def wait_unmatched(self, what: str) -> dict[str, Any]:
        """Wait until the watcher reports an unmatched VM interface; return the one it reports."""
        eventually(lambda: bool(self.vm_interfaces("unmatched")), what, timeout=WIRE_TIMEOUT)
        (seen,) = self.vm_interfaces("unmatched")
        return seen


@pytest.fixture
def fabric(local: tuple[LocalOvs, LibvirtDaemons], tmp_path: Path) -> Iterator[LibvirtFabric]:
    ovs, daemons = local
    with libvirt_service(
        ovs,
        tmp_path,
        tenant="t",
        cidr="10.40.0.0/24",
        # A short audit interval so drift in flows is found within seconds in tests.
        extra_env={"OVS_FABRIC_RECONCILE_INTERVAL": "2"},
    ) as service:
        domains = Domains()
        try:
            yield LibvirtFabric(
                **{f.name: getattr(service, f.name) for f in fields(LibvirtService)},
                ovs=ovs,
                daemons=daemons,
                domains=domains,
            )
        finally:
            domains.cleanup()


# ---- the three matching rules ---------------------------------------------------------------


def test_interfaceid_names_the_port_and_destroy_unbinds_it(fabric: LibvirtFabric) -> None:
    mac = random_mac()
    port = fabric.new_port(mac)
    started = "ovs_fabric_libvirt_events_total"
    before = value(scrape_service(fabric.service), started, type="STARTED")

    vm = fabric.domains.define([ovs_nic(fabric.bridge, mac, interface_id=port["id"])])

    # libvirt plugged the tap itself: the service only tags it and adds flows.
    tap = fabric.wait_wired(port["id"], vm, mac, owned=False)
    assert value(scrape_service(fabric.service), started, type="STARTED") > before
    ofport = fabric.ovs.ofport(tap)
    assert fabric.sole_vm_interface() == ("bound", port["id"], "interfaceid")

    vm.destroy()

    fabric.wait_gone(tap, ofport)
    fabric.wait_unbound(port["id"], "the API port unbound")
    after = fabric.client.get("ports", port["id"])
    assert (after["binding"]["interface"], after["binding"]["vm_id"]) == (None, None)
    assert after["status"] == "DOWN"


def test_mac_names_the_port_of_an_ethernet_tap_the_service_attaches(
    fabric: LibvirtFabric,
) -> None:
    mac = random_mac()
    port = fabric.new_port(mac)
    tap_name = f"tvf{run_token()}"

    vm = fabric.domains.define([tap_nic(tap_name, mac)])

    tap = fabric.wait_wired(port["id"], vm, mac, owned=True)
    assert tap == tap_name
    ofport = fabric.ovs.ofport(tap)

    vm.destroy()

    fabric.wait_gone(tap, ofport)
    fabric.wait_unbound(
        port["id"], "the API port unbound (it stays: it was created through the API)"
    )


def test_metadata_network_creates_a_port_that_goes_with_the_vm(fabric: LibvirtFabric) -> None:
    mac = random_mac()

    vm = fabric.domains.define(
        [ovs_nic(fabric.bridge, mac)], metadata=network_metadata(fabric.network_id)
    )

    def created() -> list[dict[str, Any]]:
        return fabric.client.list("ports", vm_id=vm.uuid)

    eventually(lambda: len(created()) == 1, "a port created for the VM", timeout=WIRE_TIMEOUT)
    (port,) = created()
    assert port["origin"] == "libvirt"
    assert port["mac"] == mac
    assert port["network_id"] == fabric.network_id
    assert port["ips"] == ["10.40.0.1"], "an address allocated like any API port"
    tap = fabric.wait_wired(port["id"], vm, mac, owned=False)
    ofport = fabric.ovs.ofport(tap)
    assert fabric.sole_vm_interface() == ("bound", port["id"], "metadata")

    vm.destroy()

    fabric.wait_gone(tap, ofport)
    eventually(lambda: not created(), "the VM's port deleted with it", timeout=WIRE_TIMEOUT)
    with pytest.raises(ApiError) as missing:
        fabric.client.get("ports", port["id"])
    assert missing.value.status == 404


def test_metadata_may_name_the_network_and_its_tenant(fabric: LibvirtFabric) -> None:
    # A second tenant with a network of the same name makes the bare name ambiguous.
    other = fabric.client.create("tenants", name="other")
    fabric.client.create(
        "networks", tenant_id=other["id"], name="n", type="vlan", cidr="10.41.0.0/24"
    )
    ambiguous_mac, named_mac = random_mac(), random_mac()

    ambiguous = fabric.domains.define(
        [tap_nic(f"tvf{run_token()}", ambiguous_mac)], metadata=network_metadata(name="n")
    )
    named = fabric.domains.define(
        [tap_nic(f"tvf{run_token()}", named_mac)],
        metadata=network_metadata(name="n", tenant="t"),
    )

    eventually(
        lambda: len(fabric.client.list("ports", vm_id=named.uuid)) == 1,
        "a port",
        timeout=WIRE_TIMEOUT,
    )
    (port,) = fabric.client.list("ports", vm_id=named.uuid)
    assert port["network_id"] == fabric.network_id
    fabric.wait_wired(port["id"], named, named_mac, owned=True)
    seen = fabric.wait_unmatched("the ambiguous one reported")
    assert seen["vm_id"] == ambiguous.uuid
    assert "tenant" in seen["reason"]
    assert fabric.client.list("ports", vm_id=ambiguous.uuid) == []


def test_an_interface_matching_nothing_is_left_alone_and_reported(fabric: LibvirtFabric) -> None:
    mac = random_mac()
    tap_name = f"tvf{run_token()}"
    ports_before = fabric.client.list("ports")

    vm = fabric.domains.define([tap_nic(tap_name, mac)])

    seen = fabric.wait_unmatched("the interface reported")
    assert seen["vm_id"] == vm.uuid
    assert seen["mac"] == mac
    assert seen["interface"] == tap_name
    assert seen["port_id"] is None
    assert "names no network" in seen["reason"]
    assert fabric.client.list("ports") == ports_before
    assert tap_name not in fabric.ovs.ports(fabric.bridge)


def test_a_hot_plugged_nic_is_wired(fabric: LibvirtFabric) -> None:
    first_mac, plugged_mac = random_mac(), random_mac()
    fabric.new_port(first_mac)
    plugged = fabric.new_port(plugged_mac)
    vm = fabric.domains.define([tap_nic(f"tvf{run_token()}", first_mac)])
    eventually(lambda: bool(vm.taps()), "the VM running", timeout=WIRE_TIMEOUT)

    vm.attach(tap_nic(f"tvf{run_token()}", plugged_mac))

    fabric.wait_wired(plugged["id"], vm, plugged_mac, owned=True)


# ---- missed events: libvirtd restarts, the service dies -------------------------------------


def test_restarting_libvirtd_while_a_domain_starts_still_wires_it(fabric: LibvirtFabric) -> None:
    mac = random_mac()
    port = fabric.new_port(mac)
    vm = fabric.domains.define([tap_nic(f"tvf{run_token()}", mac)], start=False)

    starting = subprocess.Popen(
        ["virsh", "-c", LIBVIRT_URI, "start", vm.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        fabric.daemons.restart_libvirtd()
    finally:
        starting.wait(timeout=60)
    if not vm.is_running():
        vm.start()  # the restart cut the start short: start it as the operator would

    fabric.wait_wired(port["id"], vm, mac, owned=True)
    assert "; reconnecting" in fabric.service.log_tail(400), "the watcher saw no restart"
    eventually(fabric.watching, "the watcher connected again", timeout=WIRE_TIMEOUT)


def test_a_vm_that_died_while_libvirtd_was_down_is_unwired_after_reconnect(
    fabric: LibvirtFabric,
) -> None:
    mac = random_mac()
    port = fabric.new_port(mac)
    vm = fabric.domains.define([tap_nic(f"tvf{run_token()}", mac)])
    tap = fabric.wait_wired(port["id"], vm, mac, owned=True)
    ofport = fabric.ovs.ofport(tap)

    fabric.daemons.stop_libvirtd()
    try:
        os.kill(vm.qemu_pid(), signal.SIGKILL)  # the VM's QEMU, started by this test
    finally:
        fabric.daemons.start_libvirtd()

    fabric.wait_gone(tap, ofport)
    fabric.wait_unbound(port["id"], "the dead VM's port unbound")


def test_events_missed_while_the_service_is_down_are_caught_up(fabric: LibvirtFabric) -> None:
    old_mac, new_mac = random_mac(), random_mac()
    old_port, new_port = fabric.new_port(old_mac), fabric.new_port(new_mac)
    old_vm = fabric.domains.define([tap_nic(f"tvf{run_token()}", old_mac)])
    old_tap = fabric.wait_wired(old_port["id"], old_vm, old_mac, owned=True)
    old_ofport = fabric.ovs.ofport(old_tap)

    fabric.service.kill()
    old_vm.destroy()
    new_vm = fabric.domains.define([tap_nic(f"tvf{run_token()}", new_mac)])
    fabric.service.start()

    fabric.wait_wired(new_port["id"], new_vm, new_mac, owned=True)
    fabric.wait_gone(old_tap, old_ofport)
    fabric.wait_unbound(old_port["id"], "the stopped VM's port unbound")


# ---- the connectivity diagnosis (issue 13) ---------------------------------------------------


def test_the_diagnosis_names_a_stopped_vm(fabric: LibvirtFabric) -> None:
    mac = random_mac()
    port = fabric.new_port(mac)
    peer = fabric.new_port()  # never bound: the path stops there while the VM runs
    vm = fabric.domains.define([ovs_nic(fabric.bridge, mac, interface_id=port["id"])])
    fabric.wait_wired(port["id"], vm, mac, owned=False)

    def diagnose() -> dict[str, Any]:
        body = {"src": port["id"], "dst": peer["id"]}
        found: dict[str, Any] = fabric.client.request("POST", "/diagnose", json=body)
        return found

    running = diagnose()
    assert running["src"]["vm_state"] == "running", running
    assert running["cause"] == "port_not_bound", running

    vm.destroy()  # stays defined, shut off; the watcher unbinds its port
    fabric.wait_unbound(port["id"], "the stopped VM's port unbound")
    stopped = diagnose()
    assert (stopped["reachable"], stopped["cause"]) == (False, "vm_not_running"), stopped
    assert vm.name in stopped["explanation"] and "shut off" in stopped["explanation"]
    assert f"virsh start {vm.name}" in stopped["fix"]
