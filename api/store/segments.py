"""Segmentation id pools: which VLAN ids and VNIs the service may hand out.

Pure: parsing of range expressions such as ``"100-199,300"`` and "lowest free
id" selection. The database decides which ids are taken; this module only knows
which ones are allowed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

VLAN_MIN = 1
VLAN_MAX = 4094  # 0 and 4095 are reserved by 802.1Q
VNI_MIN = 1
VNI_MAX = 16_777_215  # 24 bits

Interval = tuple[int, int]  # inclusive bounds


def parse_ranges(text: str, *, lowest: int, highest: int) -> tuple[Interval, ...]:
    """Parse ``"1-10,20,30-40"`` into sorted, merged inclusive intervals.

    An empty string yields no interval. Raises ValueError naming the offending
    item when an item is malformed, reversed or outside [lowest, highest].
    """
    intervals: list[Interval] = []
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        first, sep, last = item.partition("-")
        try:
            start = int(first)
            end = int(last) if sep else start
        except ValueError:
            raise ValueError(f"{item!r} is not a number or a range like '100-199'") from None
        if start > end:
            raise ValueError(f"{item!r}: range start is above its end")
        if start < lowest or end > highest:
            raise ValueError(f"{item!r} is outside {lowest}-{highest}")
        intervals.append((start, end))
    return _merge(intervals)


def _merge(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _subtract(allowed: tuple[Interval, ...], removed: tuple[Interval, ...]) -> tuple[Interval, ...]:
    result: list[Interval] = []
    for start, end in allowed:
        cursor = start
        for r_start, r_end in removed:
            if r_end < cursor or r_start > end:
                continue
            if r_start > cursor:
                result.append((cursor, r_start - 1))
            cursor = max(cursor, r_end + 1)
            if cursor > end:
                break
        if cursor <= end:
            result.append((cursor, end))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class SegmentPool:
    """The ids one network type may use: configured ranges minus reserved ids."""

    intervals: tuple[Interval, ...]

    @classmethod
    def from_config(cls, ranges: str, reserved: str, *, lowest: int, highest: int) -> SegmentPool:
        allowed = parse_ranges(ranges, lowest=lowest, highest=highest)
        withheld = parse_ranges(reserved, lowest=lowest, highest=highest)
        return cls(_subtract(allowed, withheld))

    def __contains__(self, seg_id: object) -> bool:
        if not isinstance(seg_id, int):
            return False
        index = bisect.bisect_right(self.intervals, seg_id, key=lambda interval: interval[0]) - 1
        return index >= 0 and self.intervals[index][0] <= seg_id <= self.intervals[index][1]

    @property
    def size(self) -> int:
        return sum(end - start + 1 for start, end in self.intervals)

    def describe(self) -> str:
        return ",".join(f"{s}-{e}" if s != e else str(s) for s, e in self.intervals) or "(empty)"

    def lowest_free(self, used: Iterable[int]) -> int | None:
        """The smallest id of the pool not in `used`, or None when all are taken."""
        taken = sorted(set(used))
        for start, end in self.intervals:
            candidate = start
            for seg_id in taken[bisect.bisect_left(taken, start) :]:
                if seg_id > end or seg_id > candidate:
                    break
                candidate = seg_id + 1
            if candidate <= end:
                return candidate
        return None


@dataclass(frozen=True, slots=True)
class SegmentPools:
    """The pool of each network type."""

    vlan: SegmentPool
    vxlan: SegmentPool

    def for_type(self, network_type: str) -> SegmentPool:
        return self.vlan if network_type == "vlan" else self.vxlan
