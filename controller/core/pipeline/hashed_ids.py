"""Stable ids from hashes, with collisions resolved by re-hashing with a salt.

Group ids and conntrack zones are hashes of what they stand for, so adding or
removing one never renumbers another, and every controller replica computes the
same ids (blake2b, never Python's per-process salted `hash()`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

_Item = TypeVar("_Item", bound=Hashable)


def unique_salted_ids(
    items: Iterable[_Item], hash_of: Callable[[_Item, int], int]
) -> dict[_Item, int]:
    """An id per item: `hash_of(item, salt)` for the smallest salt giving a non-zero id
    no earlier item has (0 is a reserved or default value for both users).

    `items` come in the order that decides collisions: the later item is re-hashed
    with the next salt, so for a canonical order the outcome depends only on the set.
    """
    ids: dict[_Item, int] = {}
    taken: set[int] = set()
    for item in items:
        salt = 0
        candidate = hash_of(item, salt)
        while candidate == 0 or candidate in taken:
            salt += 1
            candidate = hash_of(item, salt)
        taken.add(candidate)
        ids[item] = candidate
    return ids
