"""/api/v1/networks: tenant networks (VLAN or VXLAN segments)."""

from __future__ import annotations

from fastapi import APIRouter

from api.rest.resource_routes import add_resource_routes
from api.rest.schemas import NetworkCreate, NetworkOut, NetworkType, NetworkUpdate
from api.store import resources

router = APIRouter(prefix="/networks", tags=["networks"])

add_resource_routes(
    router,
    resources.NETWORKS,
    create=resources.create_network,
    # Segmentation ids are allocated from the configured ranges.
    create_options=lambda settings: {"pools": settings.segment_pools()},
    create_body=NetworkCreate,
    patch_body=NetworkUpdate,
    out=NetworkOut,
    filters={"tenant_id": str, "type": NetworkType},
)
