"""Who acts: principals, and the bearer tokens that name them.

Tokens are random strings shown once; the database keeps only their SHA-256.
A token either belongs to a tenant (it sees and changes that tenant's objects
only) or to nobody (an admin token, sees everything). A token may expire
(`expires_at`); revoking one deletes its row. Admins list and revoke any token,
a tenant token those of its own tenant. In-process callers act as
named admin principals (`LIBVIRT_WATCHER`, `CLI`), passed explicitly: no
function defaults its actor.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from api.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from api.store.db import Database
from api.store.models import ApiToken, GlobalRevision, Tenant, utcnow


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: tenant_id None means admin (so it is never left to a default)."""

    name: str
    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


LIBVIRT_WATCHER = Principal(name="libvirt-watcher", tenant_id=None)
CLI = Principal(name="cli", tenant_id=None)


def check_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("this operation needs an admin token")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def create_token(
    session: Session,
    *,
    actor: Principal,
    name: str,
    tenant_id: str | None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Store a new token; return its row and the plain token (never stored)."""
    check_admin(actor)
    if tenant_id is not None and session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id} not found")
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid("expires_at", f"{expires_at.isoformat()} is not in the future")
    return _store_new_token(session, name=name, tenant_id=tenant_id, expires_at=expires_at)


def _check_tokens_visible(session: Session, actor: Principal, tenant_id: str | None) -> None:
    """The tokens of `tenant_id` (None: admin tokens) are the actor's to see, else NotFound."""
    if tenant_id is None:
        check_admin(actor)
    elif actor.tenant_id not in (None, tenant_id) or session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id} not found")


def list_tokens(session: Session, *, actor: Principal, tenant_id: str | None) -> list[ApiToken]:
    """The tokens of a tenant (None: the admin tokens), oldest first, expired ones included."""
    _check_tokens_visible(session, actor, tenant_id)
    owner = ApiToken.tenant_id.is_(None) if tenant_id is None else ApiToken.tenant_id == tenant_id
    stmt = select(ApiToken).where(owner).order_by(ApiToken.created_at, ApiToken.id)
    return list(session.scalars(stmt))


def revoke_token(
    session: Session, *, actor: Principal, tenant_id: str | None, token_id: str
) -> None:
    """Delete a token of a tenant (None: an admin token); it fails from the next request on."""
    _check_tokens_visible(session, actor, tenant_id)
    owner = ApiToken.tenant_id.is_(None) if tenant_id is None else ApiToken.tenant_id == tenant_id
    row = session.scalar(select(ApiToken).where(owner, ApiToken.id == token_id))
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if tenant_id is None and len(list_tokens(session, actor=actor, tenant_id=None)) == 1:
        raise Conflict("this is the last admin token; create another one first")
    session.delete(row)
    session.flush()


def _store_new_token(
    session: Session, *, name: str, tenant_id: str | None, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    token = generate_token()
    row = ApiToken(
        token_hash=hash_token(token), name=name, tenant_id=tenant_id, expires_at=expires_at
    )
    session.add(row)
    session.flush()
    return row, token


def ensure_admin_token(database: Database, *, configured: str | None) -> str | None:
    """Make sure an admin can log in; return a newly generated token to show once, or None.

    A configured token is registered (by hash) if it is not yet known. Without
    one, a token is generated only when no admin token exists at all.
    """
    with database.unversioned_write() as session:
        # Serialise first starts of several replicas (row lock on PostgreSQL;
        # SQLite already holds its write lock).
        session.execute(select(GlobalRevision.id).with_for_update())
        if configured:
            digest = hash_token(configured)
            if session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)) is None:
                session.add(ApiToken(token_hash=digest, name="configured-admin", tenant_id=None))
            return None
        if session.scalar(select(ApiToken.id).where(ApiToken.tenant_id.is_(None)).limit(1)):
            return None
        _row, token = _store_new_token(session, name="bootstrap-admin", tenant_id=None)
        return token


# Every request runs this: built once, and run on a plain connection (one statement
# needs no ORM session nor a REPEATABLE READ transaction).
_TOKEN_BY_HASH = select(ApiToken.name, ApiToken.tenant_id, ApiToken.expires_at).where(
    ApiToken.token_hash == bindparam("token_hash")
)


def authenticate(database: Database, token: str) -> Principal:
    with database.engine.connect() as connection:
        if not database.is_sqlite:
            # One statement needs no transaction: no BEGIN and no ROLLBACK round trips.
            connection.execution_options(isolation_level="AUTOCOMMIT")
        row = connection.execute(_TOKEN_BY_HASH, {"token_hash": hash_token(token)}).first()
    if row is None:
        raise Unauthorized("unknown or revoked token")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise Unauthorized("token expired")
    return Principal(name=row.name, tenant_id=row.tenant_id)
