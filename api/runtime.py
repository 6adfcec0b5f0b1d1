"""Background services started with the API: the OpenFlow controller, libvirt watchers.

`create_app`'s lifespan calls `start_background_services` once the database is
ready and calls every returned stopper on shutdown, in reverse order. Each
service runs when its own setting enables it.
"""

from __future__ import annotations

from collections.abc import Callable

from api.config import Settings
from api.libvirt.watch import start_libvirt_watchers
from api.store.snapshot import SqlStateStore
from controller.host_agent import ControllerConfig
from controller.service import FabricController


def controller_config(settings: Settings) -> ControllerConfig:
    return ControllerConfig(
        integration_bridge=settings.integration_bridge,
        datapath_type=settings.datapath_type,
        openflow_listen_host=settings.openflow_listen_host,
        openflow_port=settings.openflow_port,
        openflow_advertise=settings.openflow_advertise,
        reconcile_interval=settings.reconcile_interval,
    )


def start_background_services(settings: Settings, store: SqlStateStore) -> list[Callable[[], None]]:
    """Start what runs next to the API; return callables that stop each of them."""
    stoppers: list[Callable[[], None]] = []
    if settings.controller_enabled:
        controller = FabricController(store, controller_config(settings))
        controller.start()
        stoppers.append(controller.stop)
    if settings.libvirt_enabled:
        stoppers.append(start_libvirt_watchers(settings, store.database))
    return stoppers
