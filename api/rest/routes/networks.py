"""/api/v1/networks: tenant networks (VLAN or VXLAN segments)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.paths import API_PREFIX
from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep, PageDep, SettingsDep
from api.rest.schemas import NetworkCreate, NetworkOut, NetworkType, NetworkUpdate, Page
from api.store import crud

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
        network = crud.create_network(
            session, actor=caller, pools=settings.segment_pools(), **body.model_dump()
        )
        out = NetworkOut.model_validate(network)
    response.headers["Location"] = f"{API_PREFIX}{router.prefix}/{out.id}"
    return out


@router.get("")
def list_networks(
    caller: CallerDep,
    db: DatabaseDep,
    page: PageDep,
    tenant_id: Annotated[str | None, Query()] = None,
    type: Annotated[NetworkType | None, Query()] = None,
) -> Page[NetworkOut]:
    with db.read() as session:
        found = crud.list_networks(
            session,
            actor=caller,
            tenant_id=tenant_id,
            type=type,
            limit=page.limit,
            offset=page.offset,
        )
        return Page[NetworkOut].of(found, NetworkOut.model_validate)


@router.get("/{network_id}")
def get_network(network_id: str, caller: CallerDep, db: DatabaseDep) -> NetworkOut:
    with db.read() as session:
        network = crud.get_network(session, actor=caller, network_id=network_id)
        return NetworkOut.model_validate(network)


@router.patch("/{network_id}")
def update_network(
    network_id: str, body: NetworkUpdate, caller: CallerDep, db: DatabaseDep
) -> NetworkOut:
    with db.write() as session:
        network = crud.update_network(
            session, actor=caller, network_id=network_id, changes=body.changes()
        )
        return NetworkOut.model_validate(network)


@router.delete("/{network_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_network(network_id: str, caller: CallerDep, db: DatabaseDep) -> None:
    with db.write() as session:
        crud.delete_network(session, actor=caller, network_id=network_id)
