"""/api/v1/ports: a VM's (or any endpoint's) attachment to a network, with its binding."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep
from api.rest.resource_routes import ResourceSchemas, add_resource_routes
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import PortCreate, PortOut, PortStatus, PortUpdate, Text
from api.store import resources

router = APIRouter(prefix="/ports", tags=["ports"], responses=API_PROBLEMS)
log = logging.getLogger(__name__)

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


def shutting_down(request: Request) -> bool:
    """Set by `ovs-fabric serve` on SIGTERM (app.state.shutting_down, a threading.Event):
    waits end at once so the process can exit whatever long-polls are open."""
    flag = getattr(request.app.state, "shutting_down", None)
    return flag is not None and bool(flag.is_set())


@router.get("/{port_id}")
async def get_port(
    request: Request,
    port_id: Text,
    caller: CallerDep,
    db: DatabaseDep,
    wait: Annotated[
        Literal["active"] | None,
        Query(description="Wait until the port is ACTIVE (its flows confirmed) or timeout."),
    ] = None,
    timeout: Annotated[float, Query(gt=0, le=300, description="Seconds to wait at most.")] = 5.0,
) -> PortOut:
    """The port; with `wait=active`, as soon as it is ACTIVE or when `timeout` expires
    (or the service is shutting down).

    The port is returned either way: the client inspects `status`.
    """

    def read() -> PortOut:
        with db.read() as session:
            return PortOut.of(resources.get(session, resources.PORTS, actor=caller, id=port_id))

    started = time.monotonic()
    deadline = started + timeout
    port = await run_in_threadpool(read)
    while wait == "active" and port.status != "ACTIVE":
        remaining = deadline - time.monotonic()
        if remaining <= 0 or shutting_down(request):
            break
        await asyncio.sleep(min(WAIT_POLL_SECONDS, remaining))
        if await request.is_disconnected():
            # Nobody would read the answer: stop polling the database for it.
            log.info(
                "port %s: client gone after %.1f s of wait=active; wait stopped",
                port_id,
                time.monotonic() - started,
            )
            break
        port = await run_in_threadpool(read)
    return port
