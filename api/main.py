"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from api import runtime
from api.config import Settings
from api.logs import configure_logging
from api.paths import API_PREFIX
from api.rest import ui
from api.rest.auth import QueryCredentialScrubber
from api.rest.observability import RequestObservability, bind_path_ids
from api.rest.problems import install_problem_handlers
from api.rest.query_params import refuse_unknown_query_parameters
from api.rest.routes import (
    diagnose,
    hosts,
    load_balancers,
    metrics,
    networks,
    ports,
    system,
    tenants,
    vm_interfaces,
)
from api.store.db import Database, upgrade_database
from api.store.port_status_watch import PortStatusWatch
from api.store.principals import ensure_admin_token
from api.store.snapshot import SqlStateStore
from controller.core import gc_policy

log = logging.getLogger(__name__)

# NOTE: worker threads for the sync routes and dependencies (anyio's default is 40).
# Their work is Python under one GIL plus short database waits, and writers queue on
# one lock anyway: at 32 clients, 40 threads took turns on the GIL so often that the
# write-lock holder waited for it after every statement (rest_load, BENCHMARKS.md:
# create 46-102 req/s with 40 threads, 121-181 with 8, on PostgreSQL; server CPU per
# create 6.3-8.3 ms vs 4.2-5.1).
API_WORKER_THREADS = 8


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()
    database = Database(settings.database_url)
    # Wakes every `?wait=active` long-poll (routes/ports.py) on status changes.
    port_status_watch = PortStatusWatch(
        database, max_waiters_per_key=settings.max_waiters_per_token
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_WORKER_THREADS
        await run_in_threadpool(upgrade_database, settings.database_url)
        token = await run_in_threadpool(
            ensure_admin_token, database, configured=settings.admin_token
        )
        if token is not None:
            # Shown once: only its hash is stored.
            print(f"ovs-fabric: generated admin token (shown only now): {token}", flush=True)
        store = SqlStateStore(database, port_status_changed=port_status_watch.port_status_changed)
        app.state.store = store
        await port_status_watch.start()
        stoppers = runtime.start_background_services(settings, store)
        # What startup left alive (~240k objects) kept out of every full collection.
        gc_policy.freeze_after_startup()
        try:
            yield
        finally:
            await port_status_watch.stop()
            for stop in reversed(stoppers):
                try:
                    stop()
                except Exception:
                    log.exception("stopping a background service failed")
            database.dispose()

    app = FastAPI(
        title="ovs-fabric",
        version="0.1.0",
        summary="Tenant networks, ports and L4 load balancers on Open vSwitch.",
        lifespan=lifespan,
        # The ids in a request's path join its log lines (api/rest/observability.py).
        # Unknown query parameters are refused (api/rest/query_params.py).
        dependencies=[Depends(bind_path_ids), Depends(refuse_unknown_query_parameters)],
    )
    app.state.settings = settings
    app.state.database = database
    app.state.port_status_watch = port_status_watch
    # Set on SIGTERM by `ovs-fabric serve`: long-polls end at once (routes/ports.py).
    app.state.shutting_down = threading.Event()
    install_problem_handlers(app)
    # Inside the scrubber: latency by route and the request id (logged, echoed back).
    app.add_middleware(RequestObservability)
    # Query parameters no route declares (a token put there) are masked in the
    # request scope before uvicorn logs it.
    app.add_middleware(QueryCredentialScrubber)
    for router in (
        hosts.router,
        tenants.router,
        tenants.admin_tokens_router,
        networks.router,
        ports.router,
        load_balancers.router,
        vm_interfaces.router,
        system.router,
        diagnose.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(system.health_router)
    app.include_router(metrics.router)
    ui.install(app)
    return app
