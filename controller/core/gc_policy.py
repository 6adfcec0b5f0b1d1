"""What bulk work does with the cyclic garbage collector (one policy for the process).

Measured costs (BENCHMARKS.md, issue 11) and what is done about each:

- A full compute or a bulk install allocates up to a million container objects
  (flows, matches, encoded tuples) that all survive it and form no reference cycle;
  while they pile up the collector scans them again and again for nothing (1.3 s of
  a 2.6 s compute at 4,000 networks; 0.2-0.3 s of a 100k-flow install). Such work
  runs with the collector paused (`paused_unless_paused` here; the reconciler's
  install pause counts concurrent installs, controller.reconcile); reference
  counting still frees everything.
- Left in the youngest generation, what the work allocated is scanned by the first
  allocation after the pause (0.23 s at 4,000 networks) and again when promoted,
  only to be found alive: `settle()` moves it out of the way at once.
- The service tracks ~300k long-lived objects (libraries, ORM, os-ken, computed
  flows); every full collection scanned them all with every thread stopped (140-470
  ms on the loaded machine, each landing on a port activation in flight; 100-175 ms
  every ~4.5 s in the API alone under rest_load, which set its p99): what startup
  left alive is frozen once (`freeze_after_startup`, after a full collection), and
  the controller freezes what is alive at quiet moments (`freeze_survivors`, after
  the pass that follows a switch (re)connecting, at most once a minute per host), so
  that collections skip it; refcounting still frees those objects when they die.

The price of freezing, accepted: cyclic garbage pending at a freeze is never
collected; what the service computes holds no cycles, and freezes are rare.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_unless_paused() -> Iterator[None]:
    """No cycle search while the body allocates in bulk; a no-op when the collector is
    already off (another bulk job paused it: that one turns it back on)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# Whether this process froze on purpose (`freeze_survivors`, `freeze_after_startup`).
# Kept here, not asked of the collector: `gc.get_freeze_count()` walks every frozen
# object (25 ms per 3 million), and settle runs after every cold compute (a test
# process that had frozen an app made each of them cost that: 0.1 s -> 12.6 s for 60
# steps of tests/unit/test_affected_hosts.py).
_frozen_on_purpose = False


def settle() -> None:
    """After bulk work: every tracked object goes to the oldest generation.

    `freeze()` then `unfreeze()` does it in two list splices. `unfreeze` would also
    hand back what was frozen on purpose (`freeze_survivors`): then the new survivors
    join the frozen ones instead.
    """
    gc.freeze()
    if not _frozen_on_purpose:
        gc.unfreeze()


def freeze_survivors() -> None:
    """Every object alive now joins the permanent generation (see the module's NOTE)."""
    global _frozen_on_purpose
    _frozen_on_purpose = True
    gc.freeze()


_startup_frozen = False


def freeze_after_startup() -> None:
    """Once per process, when the service has started: a full collection (so that no
    garbage is pinned), then everything alive (imports, the app, the engine) frozen."""
    global _startup_frozen
    if _startup_frozen:
        return
    _startup_frozen = True
    gc.collect()
    freeze_survivors()
