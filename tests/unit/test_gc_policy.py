"""The collector policy of bulk work: survivors settled out of the young generations,
and never handed back from a freeze made on purpose."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from controller.core import gc_policy

pytestmark = pytest.mark.unit


def _in_generation(obj: object, generation: int) -> bool:
    return any(candidate is obj for candidate in gc.get_objects(generation))


@pytest.fixture
def never_frozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process that never froze on purpose (and nothing frozen once the test is over)."""
    monkeypatch.setattr(gc_policy, "_frozen_on_purpose", False)
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("never_frozen")
def test_settle_moves_survivors_to_the_oldest_generation_and_freezes_nothing() -> None:
    survivors = [[index] for index in range(1000)]
    assert not _in_generation(survivors[-1], 2)  # young before
    gc_policy.settle()
    assert gc.get_freeze_count() == 0
    assert _in_generation(survivors[-1], 2) and not _in_generation(survivors[-1], 0)


@pytest.mark.usefixtures("never_frozen")
def test_settle_keeps_a_freeze_made_on_purpose_and_adds_the_survivors_to_it() -> None:
    long_lived = [[index] for index in range(1000)]
    gc_policy.freeze_survivors()
    frozen = gc.get_freeze_count()
    assert frozen >= len(long_lived)
    survivors = [[index] for index in range(1000)]
    gc_policy.settle()
    assert gc.get_freeze_count() >= frozen + len(survivors)
    assert not _in_generation(long_lived[0], 2) and not _in_generation(survivors[0], 2)


@pytest.mark.usefixtures("never_frozen")
def test_settle_does_not_count_what_is_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    # gc.get_freeze_count() walks every frozen object: after a service froze its startup,
    # each settle (one per cold compute) paid for it.
    def walk() -> int:
        raise AssertionError("settle walked the permanent generation")

    monkeypatch.setattr(gc, "get_freeze_count", walk)
    gc_policy.freeze_survivors()
    gc_policy.settle()


def test_a_bulk_pause_inside_another_leaves_the_collector_to_the_outer_one() -> None:
    assert gc.isenabled()
    with gc_policy.paused_unless_paused():
        assert not gc.isenabled()
        with gc_policy.paused_unless_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("never_frozen")
def test_startup_is_frozen_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_policy, "_startup_frozen", False)
    gc_policy.freeze_after_startup()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    later = [[index] for index in range(1000)]
    gc_policy.freeze_after_startup()  # a second app in the same process (tests)
    assert gc.get_freeze_count() == frozen
    assert any(_in_generation(later[0], generation) for generation in (0, 1, 2))  # not frozen
