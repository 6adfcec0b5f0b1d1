"""/api/v1/hosts: the machines running OVS (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from api.rest.auth import AdminDep, require_admin
from api.rest.deps import DatabaseDep
from api.rest.resource_routes import add_resource_routes, set_location
from api.rest.schemas import HostCreate, HostOut, HostUpdate
from api.store import resources

router = APIRouter(prefix="/hosts", tags=["hosts"], dependencies=[Depends(require_admin)])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_host(body: HostCreate, admin: AdminDep, db: DatabaseDep, response: Response) -> HostOut:
    with db.write() as session:
        out = HostOut.model_validate(
            resources.create_host(session, actor=admin, **body.model_dump())
        )
    set_location(response, router, out.id)
    return out


add_resource_routes(
    router,
    resources.HOSTS,
    out=HostOut.model_validate,
    out_type=HostOut,
    patch_body=HostUpdate,
    writer=AdminDep,
)
