"""Background services started with the API: the OpenFlow controller, libvirt watchers.

`create_app`'s lifespan calls `start_background_services` once the database is
ready and calls every returned stopper on shutdown, in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable

from api.config import Settings
from api.state import SqlStateStore


def start_background_services(settings: Settings, store: SqlStateStore) -> list[Callable[[], None]]:
    """Start what runs next to the API; return callables that stop each of them."""
    del settings, store  # nothing runs in the background yet
    return []
