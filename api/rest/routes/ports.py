"""/api/v1/ports: a VM's (or any endpoint's) attachment to a network, with its binding."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep
from api.rest.resource_routes import ResourceSchemas, add_resource_routes
from api.rest.schemas import PortCreate, PortOut, PortStatus, PortUpdate
from api.store import resources

router = APIRouter(prefix="/ports", tags=["ports"])

# How often a waiting GET re-reads the port; a cheap primary-key lookup.
WAIT_POLL_SECONDS = 0.1


add_resource_routes(
    router,
    resources.PORTS,
    resources.create_port,
    ResourceSchemas(PortCreate, PortUpdate, PortOut),
    filters={
    "network_id": str,
    "host_id": str,
    "status": PortStatus,
    "vm_id": str,
    },
    with_get=False,  # GET /{port_id} can wait for ACTIVE: below
)


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
            return PortOut.of(resources.get(session, resources.PORTS, actor=caller, id=port_id))

    deadline = time.monotonic() + timeout
    port = await run_in_threadpool(read)
    while wait == "active" and port.status != "ACTIVE":
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(WAIT_POLL_SECONDS, remaining))
        port = await run_in_threadpool(read)
    return port
