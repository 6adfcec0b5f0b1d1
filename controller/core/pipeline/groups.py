"""Content-addressed OpenFlow group ids.

A group's id is a hash of what it does, so a group whose membership changes
gets a new id: the reconciler adds the new group, repoints the flows in one
atomic bundle and deletes the old group, and a switch never forwards through a
half-updated group. The hash is blake2b of a canonical repr (never Python's
per-process salted `hash()`), so every controller replica computes the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from controller.core.flows import Bucket, Output
from controller.core.pipeline.hashed_ids import unique_salted_ids

GROUP_ID_MASK: Final = 0x7FFFFFFF  # 31 bits: far below OFPG_MAX, never a reserved id


@dataclass(frozen=True, slots=True)
class GroupContent:
    """A group before it has an id: what the pipeline builds and hashes."""

    type: str
    buckets: tuple[Bucket, ...]
    # Python's hash, computed once: a content is a dict key many times per compute
    # (reference counts, ids) and its buckets and actions hash in Python, ~10 µs a time
    # for a flood group of 10 ports (a tenth of a full compute at 4,000 networks).
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.type, self.buckets)))

    def __hash__(self) -> int:
        return self._hash

    def canonical(self) -> str:
        """`repr((self.type, self.buckets))`, written out for the usual bucket (one Output):
        the reprs of its NamedTuples are Python calls, and 8,000 groups of 10 buckets
        took a twentieth of a full compute at 4,000 networks."""
        return f"({self.type!r}, {_tuple_repr(list(map(_bucket_repr, self.buckets)))})"


def _tuple_repr(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _bucket_repr(bucket: Bucket) -> str:
    actions, weight, watch_port = bucket
    if len(actions) == 1 and type(actions[0]) is Output:
        port, max_len = actions[0]
        return (
            f"Bucket(actions=(Output(port={port!r}, max_len={max_len!r}),), "
            f"weight={weight!r}, watch_port={watch_port!r})"
        )
    return repr(bucket)


def group_hash(content: GroupContent, salt: int) -> int:
    data = f"{salt}|{content.canonical()}".encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"ovs-fabric-grp").digest()
    return int.from_bytes(digest, "big") & GROUP_ID_MASK


def assign_group_ids(contents: Iterable[GroupContent]) -> dict[GroupContent, int]:
    """Give every distinct content a non-zero 31-bit id, unique within this set.

    Equal contents share one group. On a hash collision the content that sorts
    later (by canonical repr) is re-hashed with the next salt, so the outcome
    depends only on the set of contents, not on the order they came in.
    """
    # NOTE: `group_hash` is looked up on every call, so a test can force collisions.
    return unique_salted_ids(sorted(set(contents), key=GroupContent.canonical), group_hash)


def first_choice_id(content: GroupContent) -> int:
    """The id `content` gets unless another content of its set collides with it (salt 0)."""
    return group_hash(content, 0)
