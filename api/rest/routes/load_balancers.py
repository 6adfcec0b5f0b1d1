"""/api/v1/load-balancers: L4 listeners (VIP, protocol, port) over weighted backends."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep
from api.rest.resource_routes import add_resource_routes, set_location
from api.rest.schemas import LoadBalancerCreate, LoadBalancerOut, LoadBalancerUpdate
from api.store import resources

router = APIRouter(prefix="/load-balancers", tags=["load-balancers"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_load_balancer(
    body: LoadBalancerCreate, caller: CallerDep, db: DatabaseDep, response: Response
) -> LoadBalancerOut:
    with db.write() as session:
        lb = resources.create_load_balancer(session, actor=caller, **body.model_dump())
        out = LoadBalancerOut.of(lb)
    set_location(response, router, out.id)
    return out


add_resource_routes(
    router,
    resources.LOAD_BALANCERS,
    out=LoadBalancerOut.of,
    out_type=LoadBalancerOut,
    patch_body=LoadBalancerUpdate,
    filters={"network_id": str},
)
