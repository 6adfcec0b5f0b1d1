"""/api/v1/ports: a VM's (or any endpoint's) attachment to a network, with its binding."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from api.rest.auth import CallerDep
from api.rest.bodies import port_body
from api.rest.deps import DatabaseDep
from api.rest.resource_routes import RecordReader, ResourceSchemas, add_resource_routes
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import PortCreate, PortOut, PortStatus, PortUpdate, Text
from api.store import resources
from api.store.port_status_watch import PortStatusWatch
from api.store.principals import hash_token

router = APIRouter(prefix="/ports", tags=["ports"], responses=API_PROBLEMS)
log = logging.getLogger(__name__)

# How often a waiting GET checks, without the database, whether its client is still
# there and the service still running. Status changes wake it at once: PortStatusWatch.
WAIT_CHECK_SECONDS = 0.25


add_resource_routes(
    router,
    resources.PORTS,
    resources.add_port,
    ResourceSchemas(PortCreate, PortUpdate, PortOut),
    filters={
        "network_id": str,
        "host_id": str,
        "status": PortStatus,
        "vm_id": str,
    },
    with_get=False,  # GET /{port_id} can wait for ACTIVE: below
    records=RecordReader(resources.port_records, port_body),
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
    (or the service is shutting down, or the client goes away). A token holds at most
    `max_waiters_per_token` waits at once (default 32): beyond, 429 with Retry-After.

    The port is returned either way: the client inspects `status`.
    """

    def read() -> PortOut:
        with db.read() as session:
            return PortOut.of(resources.get(session, resources.PORTS, actor=caller, id=port_id))

    started = time.monotonic()
    deadline = started + timeout
    port = await run_in_threadpool(read)
    if wait != "active" or port.status == "ACTIVE" or shutting_down(request):
        return port
    watch: PortStatusWatch = request.app.state.port_status_watch
    async with watch.waiting(_token_key(request), port_id) as woken:
        # Registered before this read: a status written from now on wakes us.
        port = await run_in_threadpool(read)
        while port.status != "ACTIVE":
            remaining = deadline - time.monotonic()
            if remaining <= 0 or shutting_down(request):
                break
            try:
                await asyncio.wait_for(woken.wait(), timeout=min(WAIT_CHECK_SECONDS, remaining))
            except TimeoutError:
                if await request.is_disconnected():
                    # Nobody would read the answer: stop waiting (and free the slot).
                    log.info(
                        "port %s: client gone after %.1f s of wait=active; wait stopped",
                        port_id,
                        time.monotonic() - started,
                    )
                    break
                continue
            woken.clear()
            port = await run_in_threadpool(read)
    return port


def _token_key(request: Request) -> str:
    """The caller's token as the waiter limit counts it: its hash, as the store keeps it."""
    _scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return hash_token(credentials.strip())
