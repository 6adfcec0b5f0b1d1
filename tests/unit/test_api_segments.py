"""Segmentation id pools: range parsing and lowest-free selection."""

from __future__ import annotations

import pytest

from api.store.segments import VLAN_MAX, VLAN_MIN, SegmentPool, parse_ranges

pytestmark = pytest.mark.unit


def vlan_pool(ranges: str, reserved: str = "") -> SegmentPool:
    return SegmentPool.from_config(ranges, reserved, lowest=VLAN_MIN, highest=VLAN_MAX)


def test_ranges_are_sorted_and_merged() -> None:
    assert parse_ranges("300-310, 100,101-105,104-120", lowest=1, highest=4094) == (
        (100, 120),
        (300, 310),
    )
    assert parse_ranges("", lowest=1, highest=4094) == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-10", "outside 1-4094"),
        ("4095", "outside 1-4094"),
        ("10-5", "start is above its end"),
        ("abc", "not a number"),
        ("1-", "not a number"),
        ("1-2-3", "not a number"),
    ],
)
def test_bad_ranges_are_rejected_with_the_offending_item(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ranges(text, lowest=1, highest=4094)


def test_reserved_ids_are_cut_out_of_the_pool() -> None:
    pool = vlan_pool("1-10,20-30", reserved="1,5-6,25-40")
    assert pool.intervals == ((2, 4), (7, 10), (20, 24))
    assert pool.size == 3 + 4 + 5
    assert 5 not in pool and 2 in pool and 24 in pool and 25 not in pool and 11 not in pool
    assert "4" not in pool  # type: ignore[operator]


def test_lowest_free_fills_gaps_first_then_moves_to_next_interval() -> None:
    pool = vlan_pool("10-12,20-21")
    assert pool.lowest_free([]) == 10
    assert pool.lowest_free([10, 12]) == 11
    assert pool.lowest_free([10, 11, 12]) == 20
    assert pool.lowest_free([1, 2, 10, 11, 12, 20, 4000]) == 21
    assert pool.lowest_free([10, 11, 12, 20, 21]) is None


def test_lowest_free_in_a_huge_pool_is_cheap() -> None:
    pool = SegmentPool.from_config("1-16777215", "", lowest=1, highest=16_777_215)
    assert pool.lowest_free(range(1, 5001)) == 5001
    assert pool.describe() == "1-16777215"
