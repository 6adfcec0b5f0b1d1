"""/api/v1/ports: a VM's (or any endpoint's) attachment to a network, with its binding."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from starlette.concurrency import run_in_threadpool

from api.paths import API_PREFIX
from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep, PageDep
from api.rest.schemas import Page, PortCreate, PortOut, PortUpdate
from api.store import crud

router = APIRouter(prefix="/ports", tags=["ports"])

# How often a waiting GET re-reads the port; a cheap primary-key lookup.
WAIT_POLL_SECONDS = 0.1


@router.post("", status_code=status.HTTP_201_CREATED)
def create_port(
    body: PortCreate, caller: CallerDep, db: DatabaseDep, response: Response
) -> PortOut:
    with db.write() as session:
        out = PortOut.of(crud.create_port(session, actor=caller, **body.model_dump()))
    response.headers["Location"] = f"{API_PREFIX}{router.prefix}/{out.id}"
    return out


@router.get("")
def list_ports(
    caller: CallerDep,
    db: DatabaseDep,
    page: PageDep,
    network_id: Annotated[str | None, Query()] = None,
    host_id: Annotated[str | None, Query()] = None,
    status: Annotated[Literal["DOWN", "ACTIVE", "ERROR"] | None, Query()] = None,
    vm_id: Annotated[str | None, Query()] = None,
) -> Page[PortOut]:
    with db.read() as session:
        found = crud.list_ports(
            session,
            actor=caller,
            network_id=network_id,
            host_id=host_id,
            status=status,
            vm_id=vm_id,
            limit=page.limit,
            offset=page.offset,
        )
        return Page[PortOut].of(found, PortOut.of)


@router.get("/{port_id}")
async def get_port(
    port_id: str,
    caller: CallerDep,
    db: DatabaseDep,
    wait: Annotated[
        Literal["active"] | None,
        Query(description="Wait until the port is ACTIVE (its flows confirmed) or timeout."),
    ] = None,
    timeout: Annotated[float, Query(gt=0, le=300, description="Seconds to wait at most.")] = 5.0,
) -> PortOut:
    """The port; with `wait=active`, as soon as it is ACTIVE or when `timeout` expires.

    The port is returned either way: the client inspects `status`.
    """

    def read() -> PortOut:
        with db.read() as session:
            return PortOut.of(crud.get_port(session, actor=caller, port_id=port_id))

    deadline = time.monotonic() + timeout
    port = await run_in_threadpool(read)
    while wait == "active" and port.status != "ACTIVE":
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(WAIT_POLL_SECONDS, remaining))
        port = await run_in_threadpool(read)
    return port


@router.patch("/{port_id}")
def update_port(port_id: str, body: PortUpdate, caller: CallerDep, db: DatabaseDep) -> PortOut:
    with db.write() as session:
        port = crud.update_port(session, actor=caller, port_id=port_id, changes=body.changes())
        return PortOut.of(port)


@router.delete("/{port_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_port(port_id: str, caller: CallerDep, db: DatabaseDep) -> None:
    with db.write() as session:
        crud.delete_port(session, actor=caller, port_id=port_id)
