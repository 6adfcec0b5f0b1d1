"""/api/v1/load-balancers: L4 listeners (VIP, protocol, port) over weighted backends."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.paths import API_PREFIX
from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep, PageDep
from api.rest.schemas import LoadBalancerCreate, LoadBalancerOut, LoadBalancerUpdate, Page
from api.store import crud

router = APIRouter(prefix="/load-balancers", tags=["load-balancers"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_load_balancer(
    body: LoadBalancerCreate, caller: CallerDep, db: DatabaseDep, response: Response
) -> LoadBalancerOut:
    with db.write() as session:
        lb = crud.create_load_balancer(session, actor=caller, **body.model_dump())
        out = LoadBalancerOut.of(lb)
    response.headers["Location"] = f"{API_PREFIX}{router.prefix}/{out.id}"
    return out


@router.get("")
def list_load_balancers(
    caller: CallerDep,
    db: DatabaseDep,
    page: PageDep,
    network_id: Annotated[str | None, Query()] = None,
) -> Page[LoadBalancerOut]:
    with db.read() as session:
        found = crud.list_load_balancers(
            session, actor=caller, network_id=network_id, limit=page.limit, offset=page.offset
        )
        return Page[LoadBalancerOut].of(found, LoadBalancerOut.of)


@router.get("/{load_balancer_id}")
def get_load_balancer(load_balancer_id: str, caller: CallerDep, db: DatabaseDep) -> LoadBalancerOut:
    with db.read() as session:
        lb = crud.get_load_balancer(session, actor=caller, load_balancer_id=load_balancer_id)
        return LoadBalancerOut.of(lb)


@router.patch("/{load_balancer_id}")
def update_load_balancer(
    load_balancer_id: str, body: LoadBalancerUpdate, caller: CallerDep, db: DatabaseDep
) -> LoadBalancerOut:
    with db.write() as session:
        lb = crud.update_load_balancer(
            session, actor=caller, load_balancer_id=load_balancer_id, changes=body.changes()
        )
        return LoadBalancerOut.of(lb)


@router.delete("/{load_balancer_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_load_balancer(load_balancer_id: str, caller: CallerDep, db: DatabaseDep) -> None:
    with db.write() as session:
        crud.delete_load_balancer(session, actor=caller, load_balancer_id=load_balancer_id)
