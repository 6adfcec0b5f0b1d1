"""/api/v1/load-balancers: L4 listeners (VIP, protocol, port) over weighted backends."""

from __future__ import annotations

from fastapi import APIRouter

from api.rest.resource_routes import ResourceSchemas, add_resource_routes
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import LoadBalancerCreate, LoadBalancerOut, LoadBalancerUpdate
from api.store import resources

router = APIRouter(prefix="/load-balancers", tags=["load-balancers"], responses=API_PROBLEMS)

add_resource_routes(
    router,
    resources.LOAD_BALANCERS,
    resources.create_load_balancer,
    ResourceSchemas(LoadBalancerCreate, LoadBalancerUpdate, LoadBalancerOut),
    filters={"network_id": str},
)
