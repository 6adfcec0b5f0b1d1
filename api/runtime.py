"""Background services started with the API: the OpenFlow controller, libvirt watchers.

`create_app`'s lifespan calls `start_background_services` once the database is
ready and calls every returned stopper on shutdown, in reverse order. Each
service runs when its own setting enables it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable
from dataclasses import fields, replace

from sqlalchemy.engine import make_url

from api.config import Settings
from api.libvirt.watch import start_libvirt_watchers
from api.metrics import start_exporter
from api.store.replicas import PgMastership
from api.store.snapshot import SqlStateStore
from api.store.tombstones import start_tombstone_pruner
from controller.core.mastership import ReplicaInfo
from controller.host_agent import ControllerConfig, network_controller_target
from controller.service import FabricController


def controller_config(settings: Settings) -> ControllerConfig:
    """The controller's configuration: every field that has a setting of the same name."""
    return ControllerConfig(
        **{
            field.name: getattr(settings, field.name)
            for field in fields(ControllerConfig)
            if field.name in Settings.model_fields
        }
    )


class ControllerAlreadyRuns(Exception):
    pass


# Held open for the life of the process: the kernel drops the lock when it dies.
_sqlite_controller_lock: list[int] = []


def claim_sqlite_controller(settings: Settings) -> None:
    """On SQLite the service is one process: refuse a second controller on the same
    database file (it would master every switch as well). A lock on a file next to
    the database, released by the kernel when the holder dies, even by SIGKILL."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    if not settings.controller_enabled or _sqlite_controller_lock:
        return
    fd = os.open(f"{url.database}.controller-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ControllerAlreadyRuns(
            "controller replicas need PostgreSQL: another controller already runs on"
            f" {url.database}"
        ) from None
    _sqlite_controller_lock.append(fd)


def _controller(settings: Settings, store: SqlStateStore) -> FabricController:
    config = controller_config(settings)
    if not settings.controller_replicas:
        return FabricController(store, config)
    replica_id = settings.replica_id or secrets.token_hex(4)
    # Each replica listens on its own relay socket in a local host's run directory.
    config = replace(config, relay_socket=f"ovs-fabric-ofp-{replica_id}.sock")
    replica = ReplicaInfo(
        id=replica_id,
        relay_socket=config.relay_socket,
        network_target=network_controller_target(config),
    )
    return FabricController(
        store,
        config,
        mastership=PgMastership(store.database, replica),
        replica=replica,
        mastership_poll_interval=settings.mastership_poll_interval,
        mastership_grace=settings.mastership_grace,
    )


def start_background_services(settings: Settings, store: SqlStateStore) -> list[Callable[[], None]]:
    """Start what runs next to the API; return callables that stop each of them."""
    stoppers: list[Callable[[], None]] = []
    if settings.metrics_port is not None:
        stoppers.append(start_exporter(settings.metrics_host, settings.metrics_port))
    # Every process prunes (any role may be the only one left running); prunes are idempotent.
    pruner = start_tombstone_pruner(store.database, retention=settings.tombstone_retention)
    stoppers.append(pruner.stop)
    if settings.controller_enabled and settings.role != "api":
        controller = _controller(settings, store)
        controller.start()
        stoppers.append(controller.stop)
    if settings.libvirt_enabled:
        stoppers.append(start_libvirt_watchers(settings, store.database))
    return stoppers
