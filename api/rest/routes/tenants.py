"""/api/v1/tenants and their tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.paths import API_PREFIX
from api.rest.auth import AdminDep, CallerDep, create_token
from api.rest.deps import DatabaseDep, PageDep
from api.rest.schemas import Page, TenantCreate, TenantOut, TenantUpdate, TokenCreate, TokenOut
from api.store import crud

router = APIRouter(prefix="/tenants", tags=["tenants"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_tenant(
    body: TenantCreate, _admin: AdminDep, db: DatabaseDep, response: Response
) -> TenantOut:
    with db.write() as session:
        out = TenantOut.model_validate(crud.create_tenant(session, **body.model_dump()))
    response.headers["Location"] = f"{API_PREFIX}{router.prefix}/{out.id}"
    return out


@router.get("")
def list_tenants(caller: CallerDep, db: DatabaseDep, page: PageDep) -> Page[TenantOut]:
    with db.read() as session:
        found = crud.list_tenants(session, actor=caller, limit=page.limit, offset=page.offset)
        return Page[TenantOut].of(found, TenantOut.model_validate)


@router.get("/{tenant_id}")
def get_tenant(tenant_id: str, caller: CallerDep, db: DatabaseDep) -> TenantOut:
    with db.read() as session:
        return TenantOut.model_validate(crud.get_tenant(session, actor=caller, tenant_id=tenant_id))


@router.patch("/{tenant_id}")
def update_tenant(
    tenant_id: str, body: TenantUpdate, _admin: AdminDep, db: DatabaseDep
) -> TenantOut:
    with db.write() as session:
        tenant = crud.update_tenant(session, tenant_id=tenant_id, changes=body.changes())
        return TenantOut.model_validate(tenant)


@router.delete("/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tenant(tenant_id: str, _admin: AdminDep, db: DatabaseDep) -> None:
    with db.write() as session:
        crud.delete_tenant(session, tenant_id=tenant_id)


@router.post("/{tenant_id}/tokens", status_code=status.HTTP_201_CREATED)
def create_tenant_token(
    tenant_id: str, body: TokenCreate, _admin: AdminDep, db: DatabaseDep
) -> TokenOut:
    """Create a bearer token for the tenant. The token is in this response only."""
    with db.unversioned_write() as session:
        row, token = create_token(session, name=body.name, tenant_id=tenant_id)
        return TokenOut(
            id=row.id,
            name=row.name,
            tenant_id=row.tenant_id,
            created_at=row.created_at,
            token=token,
        )
