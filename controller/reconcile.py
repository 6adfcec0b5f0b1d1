"""Make one switch's flow table and group table equal to the desired config.

Every flow carries a content-addressed cookie (service prefix + hash of the
flow), so the diff between desired and actual is a set difference of cookies:
no flow parsing, and exact after a controller restart (there is no per-run
generation to sweep). Groups are content-addressed the same way by the pipeline.

Changes are hitless, each step confirmed by the switch before the next:
1. new groups are added (nothing references them yet);
2. one atomic bundle adds the new flows (an ADD with an equal match replaces the
   old flow in place) and deletes the flows no longer desired;
3. groups no longer referenced are deleted.
A flow the switch rejects is reported with its error and left out; the rest of
the diff still lands.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

from controller.core import ofmsg
from controller.core.flows import Flow, Group
from controller.core.sync import plan_sync
from controller.openflow.channel import OpenFlowError, SwitchChannel

log = logging.getLogger(__name__)

# A bundle of 100k flows is tens of MB; sending it in slices keeps os-ken's
# bounded send queue moving without building one huge buffer.
_SEND_SLICE = 256 << 10
_MAX_ATTEMPTS = 3
_Owner = TypeVar("_Owner", bound=Hashable)


@dataclass(slots=True)
class SyncResult:
    flows_added: int = 0
    flows_deleted: int = 0
    groups_added: int = 0
    groups_deleted: int = 0
    rejected: dict[Flow | Group, OpenFlowError] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(
            self.flows_added or self.flows_deleted or self.groups_added or self.groups_deleted
        )


class DatapathSync:
    """Reconciles one switch. Not thread-safe: one host worker owns it."""

    def __init__(self, channel: SwitchChannel, *, timeout: float = 30.0) -> None:
        self.channel = channel
        self.timeout = timeout
        self._actual_flows: set[int] = set()
        self._actual_groups: set[int] = set()
        # Cookies of flows the switch rejected, so an unchanged desired state does
        # not resend them on every pass; cleared on every full read.
        self._rejected: dict[int, OpenFlowError] = {}
        self._foreign_cookies: set[int] = set()

    @property
    def flow_count(self) -> int:
        """Service flows on the switch, as far as the last read and the applied diffs say."""
        return len(self._actual_flows)

    @property
    def group_count(self) -> int:
        return len(self._actual_groups)

    def read_actual(self) -> None:
        """Read the switch's flow and group tables (level-triggered: never trust memory alone)."""
        xid = self.channel.next_xid()
        flows_reply = self.channel.expect(xid)
        # Every flow on the bridge, ours or not: br-int belongs to the service.
        self.channel.send(ofmsg.flow_stats_request(xid, cookie=0, cookie_mask=0))
        gxid = self.channel.next_xid()
        groups_reply = self.channel.expect(gxid)
        self.channel.send(ofmsg.group_desc_request(gxid))
        cookies = {c for _table, c in ofmsg.parse_flow_stats_cookies(self._wait(flows_reply))}
        prefix = ofmsg.SERVICE_COOKIE_PREFIX << 48
        self._actual_flows = {c for c in cookies if c & ofmsg.COOKIE_SERVICE_MASK == prefix}
        self._foreign_cookies = cookies - self._actual_flows
        self._actual_groups = set(ofmsg.parse_group_desc_ids(self._wait(groups_reply)))
        self._rejected.clear()

    def apply(self, flows: Iterable[Flow], groups: Iterable[Group]) -> SyncResult:
        encoded = {}
        for flow in flows:
            ef = ofmsg.encode_flow(flow)
            encoded[ef.cookie] = (flow, ef)
        wanted_groups = {g.group_id: g for g in groups}
        wanted_cookies = set(encoded) - set(self._rejected)
        plan = plan_sync(
            desired_flows=wanted_cookies,
            actual_flows=self._actual_flows,
            desired_groups=wanted_groups,
            actual_groups=self._actual_groups,
        )
        result = SyncResult()
        if self._foreign_cookies:
            self._send_bundle([ofmsg.flow_delete_by_cookie(c) for c in self._foreign_cookies], [])
            log.warning(
                "datapath %016x: removed %d foreign flow cookie(s)",
                self.channel.datapath_id,
                len(self._foreign_cookies),
            )
            self._foreign_cookies.clear()
        if plan.empty:
            return result

        if plan.add_groups:
            new_groups = [wanted_groups[gid] for gid in plan.add_groups]
            _committed, failed_groups = self._send_bundle(
                [ofmsg.group_add(g) for g in new_groups], new_groups
            )
            for group in new_groups:
                if group in failed_groups:
                    result.rejected[group] = failed_groups[group]
                else:
                    self._actual_groups.add(group.group_id)
                    result.groups_added += 1

        # Rejections are tracked by cookie: hashing 100k frozen Flows costs more
        # than encoding them.
        add_cookies = list(plan.add_flows)
        to_delete = list(plan.delete_flows)
        for _attempt in range(_MAX_ATTEMPTS):
            msgs = [encoded[cookie][1].flow_mod for cookie in add_cookies]
            msgs.extend(ofmsg.flow_delete_by_cookie(c) for c in to_delete)
            committed, failed = self._send_bundle(msgs, add_cookies)
            for cookie, error in failed.items():
                result.rejected[encoded[cookie][0]] = error
                self._rejected[cookie] = error
            if failed:
                add_cookies = [c for c in add_cookies if c not in failed]
            if committed:
                break
        else:
            raise RuntimeError("switch kept rejecting the bundle")
        self._actual_flows.update(add_cookies)
        self._actual_flows.difference_update(to_delete)
        result.flows_added = len(add_cookies)
        result.flows_deleted = len(to_delete)

        if plan.delete_groups:
            self._send_bundle([ofmsg.group_delete(g) for g in plan.delete_groups], [])
            self._actual_groups.difference_update(plan.delete_groups)
            result.groups_deleted = len(plan.delete_groups)

        for item, error in result.rejected.items():
            log.error("datapath %016x rejected %r: %s", self.channel.datapath_id, item, error)
        return result

    # ---- wire ------------------------------------------------------------------------

    def _send_bundle(
        self, messages: list[bytes], owners: Sequence[_Owner]
    ) -> tuple[bool, dict[_Owner, OpenFlowError]]:
        """Send `messages` in one atomic bundle; `owners[i]` names what `messages[i]` adds.

        Returns whether the commit landed and the owners of rejected messages (a
        message rejected when added is left out of a commit that still lands).
        Raises OpenFlowError when the bundle failed for a reason no message explains.
        """
        if not messages:
            return True, {}
        channel = self.channel
        bundle_id = channel.next_xid()
        open_xid = channel.next_xid()
        opened = channel.expect(open_xid)
        channel.send(ofmsg.bundle_open(bundle_id, open_xid))
        first_xid = channel.next_xid()
        xids = range(first_xid, first_xid + len(messages))
        # Reserve the whole xid range at once so concurrent requests never collide.
        for _ in range(len(messages) - 1):
            channel.next_xid()
        buffer = bytearray()
        for offset, message in enumerate(messages):
            buffer += ofmsg.bundle_add(bundle_id, first_xid + offset, message)
            if len(buffer) >= _SEND_SLICE:
                channel.send(buffer)
                buffer = bytearray()
        commit_xid = channel.next_xid()
        committed = channel.expect(commit_xid)
        buffer += ofmsg.bundle_commit(bundle_id, commit_xid)
        channel.send(buffer)
        self._wait(opened)
        commit_error: OpenFlowError | None = None
        try:
            self._wait(committed)
        except OpenFlowError as error:
            commit_error = error
            # A failed commit may be reported before the error naming the add that
            # failed it; a barrier's reply comes after every error the commit caused.
            barrier_xid = channel.next_xid()
            flushed = channel.expect(barrier_xid)
            channel.send(ofmsg.barrier_request(barrier_xid))
            self._wait(flushed)
        # Errors for adds rejected on arrival precede the commit's reply.
        errors = channel.take_errors(xids)
        owned = range(len(owners))
        failed = {
            owners[xid - first_xid]: err for xid, err in errors.items() if xid - first_xid in owned
        }
        unexplained = [e for x, e in errors.items() if x - first_xid not in owned]
        if commit_error is not None and not failed:
            raise commit_error
        if unexplained:
            raise unexplained[0]
        return commit_error is None, failed

    def _wait(self, future: Future[bytes]) -> bytes:
        return future.result(timeout=self.timeout)
