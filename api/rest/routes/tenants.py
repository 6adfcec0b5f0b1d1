"""/api/v1/tenants and their tokens; /api/v1/tokens: the admin tokens.

Tokens are created by admins; admins list and revoke any token, a tenant token
those of its own tenant (another tenant's are "not found"). A listed token shows
everything but the token itself, which only its creation response carries.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from api.rest.auth import AdminDep, CallerDep, require_admin
from api.rest.deps import DatabaseDep
from api.rest.resource_routes import ResourceSchemas, add_resource_routes
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import (
    TenantCreate,
    TenantOut,
    TenantUpdate,
    Text,
    TokenCreate,
    TokenInfoOut,
    TokenOut,
)
from api.store import resources
from api.store.principals import create_token, list_tokens, revoke_token

router = APIRouter(prefix="/tenants", tags=["tenants"], responses=API_PROBLEMS)
admin_tokens_router = APIRouter(
    prefix="/tokens",
    tags=["tenants"],
    dependencies=[Depends(require_admin)],
    responses=API_PROBLEMS,
)


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
        row, token = create_token(session, actor=admin, tenant_id=tenant_id, **body.model_dump())
        return TokenOut.model_validate(
            {**TokenInfoOut.model_validate(row).model_dump(), "token": token}
        )


@router.get("/{tenant_id}/tokens")
def list_tenant_tokens(tenant_id: Text, caller: CallerDep, db: DatabaseDep) -> list[TokenInfoOut]:
    """The tenant's tokens (expired ones too), oldest first; never the tokens themselves."""
    with db.read() as session:
        rows = list_tokens(session, actor=caller, tenant_id=tenant_id)
        return [TokenInfoOut.model_validate(row) for row in rows]


@router.delete("/{tenant_id}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_tenant_token(
    tenant_id: Text, token_id: Text, caller: CallerDep, db: DatabaseDep
) -> None:
    """Revoke the token: it is refused (401) from the next request on."""
    with db.unversioned_write() as session:
        revoke_token(session, actor=caller, tenant_id=tenant_id, token_id=token_id)


@admin_tokens_router.get("")
def list_admin_tokens(admin: AdminDep, db: DatabaseDep) -> list[TokenInfoOut]:
    """The admin tokens, oldest first; never the tokens themselves."""
    with db.read() as session:
        return [
            TokenInfoOut.model_validate(r)
            for r in list_tokens(session, actor=admin, tenant_id=None)
        ]


@admin_tokens_router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_admin_token(token_id: Text, admin: AdminDep, db: DatabaseDep) -> None:
    """Revoke an admin token (not the last one: 409)."""
    with db.unversioned_write() as session:
        revoke_token(session, actor=admin, tenant_id=None, token_id=token_id)
