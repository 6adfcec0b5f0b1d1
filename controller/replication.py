"""Share the switches with other controller replicas: poll the mastership store.

Every `poll_interval` this replica reads the live replicas and the mastered
switches, then takes or gives up switch locks as `core.mastership` decides, and
tells the controller: `on_master(host_id, generation)` once a lock is won,
`on_slave(host_id)` once it is given up or can no longer be trusted,
`on_replicas(replicas)` when the set of live replicas changes (the masters then
rewrite each switch's controller targets).

If the database cannot be read, this replica cannot know whether it still holds
its locks: it stops mastering everything at once (forwarding goes on with the
installed flows), closes its connection (so its locks are surely gone) and
joins again when the database answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from controller.core.mastership import (
    MastershipStore,
    ReplicaInfo,
    plan_mastership,
)

log = logging.getLogger(__name__)


class ReplicaCoordinator:
    def __init__(
        self,
        store: MastershipStore,
        replica: ReplicaInfo,
        *,
        host_ids: Callable[[], Iterable[str]],
        on_master: Callable[[str, int], None],
        on_slave: Callable[[str], None],
        on_replicas: Callable[[tuple[ReplicaInfo, ...]], None],
        poll_interval: float = 0.15,
        grace: float = 0.5,
    ) -> None:
        self.replica = replica
        self._store = store
        self._host_ids = host_ids
        self._on_master = on_master
        self._on_slave = on_slave
        self._on_replicas = on_replicas
        self._poll_interval = poll_interval
        self._grace = grace
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._unmastered_since: dict[str, float] = {}
        self._replicas: tuple[ReplicaInfo, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="mastership", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for host_id in self._store.held():
            self._on_slave(host_id)
        self._store.leave()

    def poke(self) -> None:
        self._poke.set()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:
                if not failing:
                    log.exception("mastership store failed; mastering nothing until it answers")
                failing = True
                self._give_up_everything()
            else:
                if failing:
                    log.info("mastership store answers again")
                failing = False
            self._poke.wait(self._poll_interval)
            self._poke.clear()

    def poll(self) -> None:
        self._store.join(self.replica)
        host_ids = list(self._host_ids())
        view = self._store.view(host_ids)
        if view.replicas != self._replicas:
            log.info("live controller replicas: %s", ", ".join(r.id for r in view.replicas))
            self._replicas = view.replicas
            self._on_replicas(view.replicas)
        plan = plan_mastership(
            self.replica.id,
            view,
            host_ids,
            self._store.held(),
            self._unmastered_since,
            time.monotonic(),
            self._grace,
        )
        for host_id in plan.release:
            self._on_slave(host_id)  # stop writing first, then let another take it
            self._store.release(host_id)
            log.info("switch of host %s released (rebalance)", host_id)
        for host_id in plan.acquire:
            generation = self._store.try_acquire(host_id)
            if generation is not None:
                log.info("switch of host %s: master, generation %d", host_id, generation)
                self._on_master(host_id, generation)

    def _give_up_everything(self) -> None:
        for host_id in self._store.held():
            self._on_slave(host_id)
        try:
            self._store.leave()
        except Exception:
            log.debug("leaving the mastership store failed", exc_info=True)
        self._replicas = None
