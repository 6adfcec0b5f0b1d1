"""/api/v1/hosts: the machines running OVS (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from api.paths import API_PREFIX
from api.rest.auth import require_admin
from api.rest.deps import DatabaseDep, PageDep
from api.rest.schemas import HostCreate, HostOut, HostUpdate, Page
from api.store import crud

router = APIRouter(prefix="/hosts", tags=["hosts"], dependencies=[Depends(require_admin)])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_host(body: HostCreate, db: DatabaseDep, response: Response) -> HostOut:
    with db.write() as session:
        out = HostOut.model_validate(crud.create_host(session, **body.model_dump()))
    response.headers["Location"] = f"{API_PREFIX}{router.prefix}/{out.id}"
    return out


@router.get("")
def list_hosts(db: DatabaseDep, page: PageDep) -> Page[HostOut]:
    with db.read() as session:
        found = crud.list_hosts(session, limit=page.limit, offset=page.offset)
        return Page[HostOut].of(found, HostOut.model_validate)


@router.get("/{host_id}")
def get_host(host_id: str, db: DatabaseDep) -> HostOut:
    with db.read() as session:
        return HostOut.model_validate(crud.get_host(session, host_id=host_id))


@router.patch("/{host_id}")
def update_host(host_id: str, body: HostUpdate, db: DatabaseDep) -> HostOut:
    with db.write() as session:
        host = crud.update_host(session, host_id=host_id, changes=body.changes())
        return HostOut.model_validate(host)


@router.delete("/{host_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_host(host_id: str, db: DatabaseDep) -> None:
    with db.write() as session:
        crud.delete_host(session, host_id=host_id)
