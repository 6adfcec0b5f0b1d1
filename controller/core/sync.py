"""What to change on a switch to make it hold the desired flows and groups: a pure plan.

Flows are named by their content-addressed cookies and groups by their
content-addressed ids, so the plan is a set difference. The executor that sends
it, step by step, is `controller.reconcile.DatapathSync`.

A cookie can also be *suspect*: the switch's flow monitor said another connection
added, modified or deleted a flow carrying it, so what the switch holds under
that cookie is unknown (same cookie, other actions; or a second flow with our
cookie). A suspect cookie is purged (deleted by cookie, every flow carrying it)
and, if desired, added again, in one atomic bundle.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Set
from dataclasses import dataclass

__all__ = ["SyncPlan", "plan_flow_changes", "plan_sync"]


@dataclass(frozen=True, slots=True)
class SyncPlan:
    add_groups: tuple[int, ...]
    add_flows: tuple[int, ...]
    delete_flows: tuple[int, ...]
    delete_groups: tuple[int, ...]
    # Deleted by cookie before `add_flows` are added (suspect and foreign cookies).
    purge_flows: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.add_groups
            or self.add_flows
            or self.delete_flows
            or self.delete_groups
            or self.purge_flows
        )


def plan_sync(
    *,
    desired_flows: Iterable[int],
    actual_flows: Iterable[int],
    desired_groups: Iterable[int],
    actual_groups: Iterable[int],
    suspect_flows: Iterable[int] = (),
) -> SyncPlan:
    """Pure diff of cookie and group-id sets, in a deterministic order."""
    want_f, have_f = set(desired_flows), set(actual_flows)
    want_g, have_g = set(desired_groups), set(actual_groups)
    suspects = set(suspect_flows)
    return SyncPlan(
        add_groups=tuple(sorted(want_g - have_g)),
        add_flows=tuple(sorted((want_f - have_f) | (want_f & suspects))),
        delete_flows=tuple(sorted(have_f - want_f - suspects)),
        delete_groups=tuple(sorted(have_g - want_g)),
        purge_flows=tuple(sorted(suspects)),
    )


def plan_flow_changes(
    *,
    added: Collection[int],
    removed: Collection[int],
    actual: Set[int],
    skip: Set[int] = frozenset(),
    suspects: Set[int] = frozenset(),
    desired: Set[int] = frozenset(),
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(add, delete, purge) when the switch held exactly the previous desired flows,
    but for the `suspects` (see above), and the desired set since gained `added` and
    lost `removed`: O(change), not O(table). `skip`: cookies not to send (the switch
    rejected them); `desired`: the desired cookies now (only asked about suspects)."""
    add = {c for c in added if c not in actual and c not in skip}
    add.update(c for c in suspects if c in desired and c not in skip)
    delete = tuple(sorted(c for c in removed if c in actual and c not in suspects))
    return tuple(sorted(add)), delete, tuple(sorted(suspects))
