"""/api/v1/networks: tenant networks (VLAN or VXLAN segments)."""

from __future__ import annotations

from fastapi import APIRouter

from api.rest.resource_routes import ResourceSchemas, add_resource_routes
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import NetworkCreate, NetworkOut, NetworkType, NetworkUpdate
from api.store import resources

router = APIRouter(prefix="/networks", tags=["networks"], responses=API_PROBLEMS)

add_resource_routes(
    router,
    resources.NETWORKS,
    resources.create_network,
    ResourceSchemas(NetworkCreate, NetworkUpdate, NetworkOut),
    # Segmentation ids are allocated from the configured ranges.
    create_options=lambda settings: {
        "pools": settings.segment_pools(),
        "underlay_mtu": settings.underlay_mtu,
    },
    filters={"tenant_id": str, "type": NetworkType},
)
