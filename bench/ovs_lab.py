"""The fabric the API benchmarks start from."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.fabric import Fabric


def bench_network(fabric: Fabric, cidr: str) -> str:
    """Hosts h1 and h2 added to `fabric`, a tenant "bench" with a VXLAN network "n" on
    `cidr`; returns the network's id."""
    for name in ("h1", "h2"):
        fabric.add_host(name)
    tenant = fabric.client.create("tenants", name="bench")["id"]
    net: str = fabric.client.create(
        "networks", tenant_id=tenant, name="n", type="vxlan", cidr=cidr
    )["id"]
    return net
