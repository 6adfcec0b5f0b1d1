"""/api/v1/networks: tenant networks (VLAN or VXLAN segments)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep, SettingsDep
from api.rest.resource_routes import add_resource_routes, set_location
from api.rest.schemas import NetworkCreate, NetworkOut, NetworkType, NetworkUpdate
from api.store import resources

router = APIRouter(prefix="/networks", tags=["networks"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_network(
    body: NetworkCreate,
    caller: CallerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    response: Response,
) -> NetworkOut:
    with db.write() as session:
        network = resources.create_network(
            session, actor=caller, pools=settings.segment_pools(), **body.model_dump()
        )
        out = NetworkOut.model_validate(network)
    set_location(response, router, out.id)
    return out


add_resource_routes(
    router,
    resources.NETWORKS,
    out=NetworkOut.model_validate,
    out_type=NetworkOut,
    patch_body=NetworkUpdate,
    filters={"tenant_id": str, "type": NetworkType},
)
