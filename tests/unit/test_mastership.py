"""Which replica masters which switch (controller.core.mastership), decided without I/O."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from controller.core import ofmsg
from controller.core.mastership import (
    MastershipView,
    ReplicaInfo,
    advisory_key,
    controller_targets,
    plan_mastership,
    preferred_owner,
)

pytestmark = pytest.mark.unit

HOSTS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(60)]


def replicas(*ids: str) -> tuple[ReplicaInfo, ...]:
    return tuple(ReplicaInfo(id=i, relay_socket=f"ofp-{i}.sock") for i in ids)


def view(ids: tuple[str, ...], mastered: set[str] = set()) -> MastershipView:  # noqa: B006
    return MastershipView(replicas=replicas(*ids), mastered=frozenset(mastered))


def test_switches_spread_over_live_replicas() -> None:
    owners = Counter(preferred_owner(h, ["a", "b", "c"]) for h in HOSTS)
    assert set(owners) == {"a", "b", "c"}
    assert min(owners.values()) >= 10  # 60 switches, roughly a third each


def test_each_replica_takes_only_its_own_at_first() -> None:
    taken: list[str] = []
    for me in ("a", "b", "c"):
        plan = plan_mastership(me, view(("a", "b", "c")), HOSTS, frozenset(), {}, 0.0, 0.5)
        assert plan.release == []
        taken += plan.acquire
    assert sorted(taken) == sorted(HOSTS)  # every switch by exactly one replica


def test_a_joining_replica_moves_only_the_switches_it_wins() -> None:
    held_by_a = frozenset(h for h in HOSTS if preferred_owner(h, ["a", "b"]) == "a")
    plan = plan_mastership("a", view(("a", "b", "c"), set(HOSTS)), HOSTS, held_by_a, {}, 0.0, 0.5)
    assert plan.acquire == []
    assert plan.release  # some switches now prefer c
    assert all(preferred_owner(h, ["a", "b", "c"]) == "c" for h in plan.release)


def test_a_dead_replicas_switches_are_taken_by_their_new_preferred_owner_at_once() -> None:
    # c died: its locks vanished; b and a survive.
    orphans = {h for h in HOSTS if preferred_owner(h, ["a", "b", "c"]) == "c"}
    mastered = set(HOSTS) - orphans
    plan = plan_mastership("b", view(("a", "b"), mastered), HOSTS, frozenset(), {}, 0.0, 0.5)
    assert set(plan.acquire) == {h for h in orphans if preferred_owner(h, ["a", "b"]) == "b"}


def test_an_unmastered_switch_goes_to_anyone_after_the_grace() -> None:
    host = next(h for h in HOSTS if preferred_owner(h, ["a", "b"]) == "a")
    since: dict[str, float] = {}
    first = plan_mastership("b", view(("a", "b")), [host], frozenset(), since, 10.0, 0.5)
    assert first.acquire == []
    later = plan_mastership("b", view(("a", "b")), [host], frozenset(), since, 10.6, 0.5)
    assert later.acquire == [host]
    # Mastered meanwhile: the clock restarts.
    plan_mastership("b", view(("a", "b"), {host}), [host], frozenset(), since, 10.7, 0.5)
    assert since == {}


def test_a_deleted_host_is_released() -> None:
    plan = plan_mastership("a", view(("a",)), [], frozenset({"gone"}), {}, 0.0, 0.5)
    assert plan.release == ["gone"]


def test_every_live_replicas_target_is_given_to_the_switch() -> None:
    both = replicas("a", "b")
    assert controller_targets("/run/h1", both, own="unix:/run/h1/ofp-a.sock") == (
        "unix:/run/h1/ofp-a.sock",
        "unix:/run/h1/ofp-b.sock",
    )
    network = (
        ReplicaInfo("a", "x", network_target="ssl:192.0.2.1:6654"),
        ReplicaInfo("b", "y", network_target="ssl:192.0.2.2:6654"),
    )
    assert controller_targets(None, network) == ("ssl:192.0.2.1:6654", "ssl:192.0.2.2:6654")


def test_advisory_keys_are_int4() -> None:
    keys = [advisory_key(h) for h in HOSTS]
    assert all(-(1 << 31) <= k < 1 << 31 for k in keys)
    assert len(set(keys)) == len(keys)


def test_role_request_bytes_equal_os_kens() -> None:
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

    class Datapath:
        ofproto = ofproto_v1_3
        ofproto_parser = ofproto_v1_3_parser

    message = ofproto_v1_3_parser.OFPRoleRequest(Datapath(), ofproto_v1_3.OFPCR_ROLE_MASTER, 7)
    message.set_xid(5)
    message.serialize()
    assert ofmsg.role_request(5, ofmsg.OFPCR_ROLE_MASTER, 7) == bytes(message.buf)


def test_a_replica_probes_only_backends_on_switches_it_masters() -> None:
    from controller.health_service import HealthService
    from tests.unit.test_health import lb, snapshot

    changes: list[object] = []
    service = HealthService(
        send=lambda *_: False,
        send_confirmed=lambda *_: None,
        on_change=changes.extend,
        probes_from=lambda host_id: host_id == "host-b",
    )
    service.update(snapshot(lb()))
    assert set(service.health()) == {("lb-1", "10.1.0.12", 8080)}  # the backend on host-b
