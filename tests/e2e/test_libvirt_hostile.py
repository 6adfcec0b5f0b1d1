"""A tenant cannot capture another tenant's VM NIC through libvirt MAC matching (issue 10).

Tenant "thief" pre-creates a port carrying the MAC of a VM whose metadata puts
it in tenant "t"'s network. Real libvirtd starts the VM; the watcher must not
bind the thief's port to the VM's tap (its frames would enter the thief's
network), and reports the NIC unmatched instead, to the admin only.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.client import FabricClient
from tests.e2e import test_libvirt
from tests.e2e.test_libvirt import LibvirtFabric
from tests.support.libvirt_env import network_metadata, random_mac, run_token, tap_nic

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# The real libvirtd, OVS and service of test_libvirt's harness.
local = test_libvirt.local
fabric = test_libvirt.fabric


def test_a_port_with_another_tenants_vm_mac_captures_nothing(fabric: LibvirtFabric) -> None:
    thief = fabric.client.create("tenants", name="thief")
    token = fabric.client.request("POST", f"/tenants/{thief['id']}/tokens", json={"name": "x"})
    mac = random_mac()
    with FabricClient(fabric.service.base_url, token["token"]) as client:
        network = client.create("networks", name="loot", type="vxlan", cidr="10.40.0.0/24")
        trap = client.create("ports", network_id=network["id"], mac=mac)

        vm = fabric.domains.define(
            [tap_nic(f"tvf{run_token()}", mac)], metadata=network_metadata(fabric.network_id)
        )

        seen = fabric.wait_unmatched("the VM's NIC reported unmatched")
        assert (seen["vm_id"], seen["mac"]) == (vm.uuid, mac)
        assert "another tenant" in seen["reason"], seen
        unbound: dict[str, Any] = client.get("ports", trap["id"])
        assert unbound["binding"] == {
            "host_id": None,
            "interface": None,
            "vm_id": None,
            "bound_at": None,
        }
        assert fabric.client.list("ports", vm_id=vm.uuid) == []
        assert seen["interface"] not in fabric.ovs.ports(fabric.bridge)
