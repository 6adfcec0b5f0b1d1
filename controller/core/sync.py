"""What to change on a switch to make it hold the desired flows and groups: a pure plan.

Flows are named by their content-addressed cookies and groups by their
content-addressed ids, so the plan is a set difference. The executor that sends
it, step by step, is `controller.reconcile.DatapathSync`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["SyncPlan", "plan_sync"]


@dataclass(frozen=True, slots=True)
class SyncPlan:
    add_groups: tuple[int, ...]
    add_flows: tuple[int, ...]
    delete_flows: tuple[int, ...]
    delete_groups: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return not (self.add_groups or self.add_flows or self.delete_flows or self.delete_groups)


def plan_sync(
    *,
    desired_flows: Iterable[int],
    actual_flows: Iterable[int],
    desired_groups: Iterable[int],
    actual_groups: Iterable[int],
) -> SyncPlan:
    """Pure diff of cookie and group-id sets, in a deterministic order."""
    want_f, have_f = set(desired_flows), set(actual_flows)
    want_g, have_g = set(desired_groups), set(actual_groups)
    return SyncPlan(
        add_groups=tuple(sorted(want_g - have_g)),
        add_flows=tuple(sorted(want_f - have_f)),
        delete_flows=tuple(sorted(have_f - want_f)),
        delete_groups=tuple(sorted(have_g - want_g)),
    )
