"""Background services started with the API: the OpenFlow controller, libvirt watchers.

`create_app`'s lifespan calls `start_background_services` once the database is
ready and calls every returned stopper on shutdown, in reverse order. Each
service runs when its own setting enables it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from api.config import Settings
from api.libvirt.watch import start_libvirt_watchers
from api.store.snapshot import SqlStateStore
from controller.host_agent import ControllerConfig
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
