"""Groups edited in place on the switch: what it reports for each group, against what we
would install.

A group's id is a hash of its content (`pipeline.groups`), so the ids read back say
nothing of a group whose buckets another connection changed under the same id
(`ovs-ofctl mod-group`). Each audit reads every group's description (OFPMP_GROUP_DESC,
the read that gives the ids); OVS reports a group's type and buckets in the encoding
of the OFPT_GROUP_MOD that set them (checked with OVS 3.1 for every action our groups
use: tests/ovs/test_reconcile_ovs.py), so one of our groups is intact when its entry
holds our GROUP_MOD's type, id and buckets, byte for byte. One that differs is set
back with OFPGC_MODIFY: atomic on the switch, and the flows pointing at it stay (OVS
deletes the flows using a group with the group, so delete + add is no repair).

Should a switch write one of our groups otherwise than we send it (a later OVS
normalising an action), a repair could never stick and every audit would modify the
group again: a group that still differs when read right after its repair is taken as
the switch's way of writing that content, and compared with that from then on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Final

from controller.core import ofmsg
from controller.core.flows import Group

OFPGC_MODIFY: Final = 1
_GROUP_DESC_ENTRY: Final = struct.Struct("!HBxI")  # length, type, pad, group_id
_GROUP_COMMAND: Final = struct.Struct("!H")
_GROUP_COMMAND_AT: Final = 8  # in an OFPT_GROUP_MOD, after the header

# A group as the switch describes it: type (1 byte), group id (4), buckets, as in
# both an OFPMP_GROUP_DESC entry and an OFPT_GROUP_MOD.
GroupDesc = bytes


def parse_group_descs(body: bytes) -> dict[int, GroupDesc]:
    """{group id: its description} of the ofp_group_desc entries of an OFPMP_GROUP_DESC
    reply body."""
    found: dict[int, GroupDesc] = {}
    view = memoryview(body)
    offset, end = 0, len(body)
    while offset < end:
        length, _type, group_id = _GROUP_DESC_ENTRY.unpack_from(body, offset)
        if length < 8 or offset + length > end:
            raise ValueError(f"bad ofp_group_desc length {length} at offset {offset}")
        # type + pad + group_id + buckets, without the pad: the GROUP_MOD's layout.
        found[group_id] = bytes(view[offset + 2 : offset + 3]) + bytes(
            view[offset + 4 : offset + length]
        )
        offset += length
    return found


def describe(group_mod: bytes) -> GroupDesc:
    """The description of the group an OFPT_GROUP_MOD (add or modify) sets."""
    return group_mod[10:11] + group_mod[12:]


def group_modify(group: Group) -> bytes:
    """OFPGC_MODIFY: `group` takes this type and these buckets, in one step."""
    add = ofmsg.group_add(group)
    return (
        add[:_GROUP_COMMAND_AT]
        + _GROUP_COMMAND.pack(OFPGC_MODIFY)
        + add[_GROUP_COMMAND_AT + _GROUP_COMMAND.size :]
    )


class GroupDriftCheck:
    """One switch's groups as last read, compared with the desired groups once per read."""

    def __init__(self) -> None:
        self._actual: dict[int, GroupDesc] = {}
        self._unchecked = False  # a read not compared yet
        # Encoded desired groups by id (the same Group object while its content holds).
        self._expected: dict[int, tuple[Group, GroupDesc]] = {}
        # What we send -> how this switch writes it back, where the two differ.
        self._switch_writes: dict[GroupDesc, GroupDesc] = {}

    def observe(self, descs: Mapping[int, GroupDesc]) -> None:
        """A fresh read of every group on the switch."""
        self._actual = dict(descs)
        self._unchecked = True

    def drifted(self, desired: Mapping[int, Group]) -> list[Group]:
        """The desired groups the switch holds with other content, at the first call after
        a read (later calls: none, until the next read)."""
        if not self._unchecked:
            return []
        self._unchecked = False
        expected = self._expected_for(desired)
        out = []
        for group_id, (group, ours) in expected.items():
            actual = self._actual.get(group_id)
            if actual is not None and actual != ours and actual != self._switch_writes.get(ours):
                out.append(group)
        return out

    def repaired(self, groups: Iterable[Group], descs: Mapping[int, GroupDesc]) -> list[Group]:
        """After `groups` were modified back, `descs` read right after: the groups the
        switch still writes otherwise, accepted as its way of writing them from now on."""
        self._actual = dict(descs)
        differ = []
        for group in groups:
            ours = self._expected[group.group_id][1]
            actual = descs.get(group.group_id)
            if actual is not None and actual != ours:
                self._switch_writes[ours] = actual
                differ.append(group)
        return differ

    def _expected_for(self, desired: Mapping[int, Group]) -> dict[int, tuple[Group, GroupDesc]]:
        known = self._expected
        fresh: dict[int, tuple[Group, GroupDesc]] = {}
        for group_id, group in desired.items():
            entry = known.get(group_id)
            if entry is None or (entry[0] is not group and entry[0] != group):
                entry = (group, describe(ofmsg.group_add(group)))
            fresh[group_id] = entry
        self._expected = fresh
        if self._switch_writes:
            current = {ours for _group, ours in fresh.values()}
            self._switch_writes = {k: v for k, v in self._switch_writes.items() if k in current}
        return fresh
