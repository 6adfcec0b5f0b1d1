"""/api/v1/hosts: the machines running OVS (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.rest.auth import AdminDep, require_admin
from api.rest.resource_routes import ResourceSchemas, add_resource_routes
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import HostCreate, HostOut, HostUpdate
from api.store import resources

router = APIRouter(
    prefix="/hosts",
    tags=["hosts"],
    dependencies=[Depends(require_admin)],
    responses=API_PROBLEMS,
)

add_resource_routes(
    router,
    resources.HOSTS,
    resources.create_host,
    ResourceSchemas(HostCreate, HostUpdate, HostOut),
    writer=AdminDep,
)
