"""The desired-vs-actual diff is a pure set difference of content-addressed ids."""

import pytest

from controller.core.sync import plan_sync

pytestmark = pytest.mark.unit


def test_unchanged_state_plans_nothing() -> None:
    plan = plan_sync(
        desired_flows=[1, 2, 3], actual_flows=[3, 2, 1], desired_groups=[7], actual_groups=[7]
    )
    assert plan.empty


def test_diff_adds_missing_and_deletes_stale_in_sorted_order() -> None:
    plan = plan_sync(
        desired_flows=[5, 1, 9],
        actual_flows=[1, 4, 2],
        desired_groups=[30, 10],
        actual_groups=[10, 20],
    )
    assert plan.add_flows == (5, 9)
    assert plan.delete_flows == (2, 4)
    assert plan.add_groups == (30,)
    assert plan.delete_groups == (20,)
    assert not plan.empty


def test_empty_switch_gets_everything() -> None:
    plan = plan_sync(desired_flows=[2, 1], actual_flows=[], desired_groups=[], actual_groups=[])
    assert plan.add_flows == (1, 2)
    assert plan.delete_flows == ()


def test_nothing_desired_removes_everything() -> None:
    plan = plan_sync(desired_flows=[], actual_flows=[8], desired_groups=[], actual_groups=[3])
    assert plan.delete_flows == (8,)
    assert plan.delete_groups == (3,)
