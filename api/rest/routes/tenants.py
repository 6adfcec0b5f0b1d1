"""/api/v1/tenants and their tokens."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.rest.auth import AdminDep
from api.rest.deps import DatabaseDep
from api.rest.resource_routes import ResourceSchemas, add_resource_routes
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import TenantCreate, TenantOut, TenantUpdate, Text, TokenCreate, TokenOut
from api.store import resources
from api.store.principals import create_token

router = APIRouter(prefix="/tenants", tags=["tenants"], responses=API_PROBLEMS)


add_resource_routes(
    router,
    resources.TENANTS,
    resources.create_tenant,
    ResourceSchemas(TenantCreate, TenantUpdate, TenantOut),
    writer=AdminDep,
)


@router.post("/{tenant_id}/tokens", status_code=status.HTTP_201_CREATED)
def create_tenant_token(
    tenant_id: Text, body: TokenCreate, admin: AdminDep, db: DatabaseDep
) -> TokenOut:
    """Create a bearer token for the tenant. The token is in this response only."""
    with db.unversioned_write() as session:
        row, token = create_token(session, actor=admin, name=body.name, tenant_id=tenant_id)
        return TokenOut(
            id=row.id,
            name=row.name,
            tenant_id=row.tenant_id,
            created_at=row.created_at,
            token=token,
        )
