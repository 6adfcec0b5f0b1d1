"""What the watcher decides for each event and state: wiring, unwiring, restarts, migration."""

from __future__ import annotations

import libvirt
import pytest

from api.libvirt import domain_xml
from api.libvirt.vm_ports import WatchedHost
from api.libvirt.watch import EventEffect, domain_activity, hosts_to_watch, lifecycle_effect

pytestmark = pytest.mark.unit

SOURCE = "11111111-0000-0000-0000-000000000001"
DEST = "22222222-0000-0000-0000-000000000002"
VM1 = "aaaaaaaa-1111-1111-1111-111111111111"
VM2 = "bbbbbbbb-2222-2222-2222-222222222222"
NET = "eeeeeeee-0000-0000-0000-00000000000e"
P1 = "00000000-0000-0000-0000-0000000000a1"
P2 = "00000000-0000-0000-0000-0000000000b2"
MAC1 = "52:54:00:00:00:01"
MAC2 = "52:54:00:00:00:02"


def domain(
    vm: str,
    activity: domain_xml.DomainActivity,
    *nics: tuple[str, str],
    network: domain_xml.NetworkRequest | None = None,
) -> domain_xml.ObservedDomain:
    interfaces = tuple(
        domain_xml.DomainInterface(mac=mac, kind="ethernet", target=tap, alias=f"net{i}")
        for i, (mac, tap) in enumerate(nics)
    )
    return domain_xml.ObservedDomain(
        domain_xml.DomainDescription(
            uuid=vm, name=f"vm-{vm[:4]}", interfaces=interfaces, network=network
        ),
        activity,
    )


def port(
    port_id: str,
    mac: str,
    *,
    host: str | None = None,
    tap: str | None = None,
    vm: str | None = None,
    origin: str = "api",
) -> domain_xml.PortRecord:
    return domain_xml.PortRecord(
        id=port_id, network_id=NET, mac=mac, host_id=host, interface=tap, vm_id=vm, origin=origin
    )


def plan_on(
    host: str,
    domains: list[domain_xml.ObservedDomain],
    ports: list[domain_xml.PortRecord],
    *,
    scope: frozenset[str] | None = None,
    keep: frozenset[str] = frozenset(),
    networks: dict[domain_xml.NetworkRequest, domain_xml.NetworkResolution] | None = None,
) -> domain_xml.BindingPlan:
    return domain_xml.plan_bindings(
        host_id=host,
        domains=domains,
        ports=ports,
        networks=networks or {},
        integration_bridge="br-int",
        scope=scope,
        keep_vm_ids=keep,
    )


# ---- start, restart, stop -------------------------------------------------------------------


def test_a_started_vm_binds_its_free_port() -> None:
    result = plan_on(
        SOURCE, [domain(VM1, "running", (MAC1, "tap1"))], [port(P1, MAC1)], scope=frozenset({VM1})
    )

    assert result.actions == (domain_xml.BindPort(port_id=P1, interface="tap1", vm_id=VM1),)


def test_a_vm_already_wired_changes_nothing() -> None:
    wired = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1)

    result = plan_on(SOURCE, [domain(VM1, "running", (MAC1, "tap1"))], [wired])

    assert result.actions == ()
    assert result.reports[0].state == "bound"


def test_a_restarted_vm_with_a_new_tap_name_is_rebound() -> None:
    before = port(P1, MAC1, host=SOURCE, tap="vnet0", vm=VM1)

    result = plan_on(SOURCE, [domain(VM1, "running", (MAC1, "vnet7"))], [before])

    assert result.actions == (domain_xml.BindPort(port_id=P1, interface="vnet7", vm_id=VM1),)


@pytest.mark.parametrize(("origin", "deleted"), [("libvirt", True), ("api", False)])
def test_a_stopped_vm_deletes_ports_it_created_and_unbinds_api_ports(
    origin: str, deleted: bool
) -> None:
    bound = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1, origin=origin)

    result = plan_on(SOURCE, [], [bound], scope=frozenset({VM1}))

    (action,) = result.actions
    assert isinstance(action, domain_xml.ReleasePort)
    assert (action.port_id, action.delete) == (P1, deleted)


def test_an_event_for_one_vm_leaves_other_vms_bindings_alone() -> None:
    other = port(P2, MAC2, host=SOURCE, tap="tap2", vm=VM2)

    result = plan_on(SOURCE, [], [other], scope=frozenset({VM1}))

    assert result.actions == ()


def test_full_reconcile_releases_bindings_of_vms_that_no_longer_run() -> None:
    stale = port(P2, MAC2, host=SOURCE, tap="tap2", vm=VM2, origin="libvirt")
    live = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1)

    result = plan_on(SOURCE, [domain(VM1, "running", (MAC1, "tap1"))], [stale, live])

    assert result.actions == (
        domain_xml.ReleasePort(
            port_id=P2, delete=True, reason=f"VM {VM2} is not running on this host"
        ),
    )


def test_full_reconcile_never_touches_api_bindings_of_non_libvirt_machines() -> None:
    namespace_vm = port(P2, MAC2, host=SOURCE, tap="veth-web", vm="vm-web-1")
    manual = port(P1, MAC1, host=SOURCE, tap="veth-db")

    result = plan_on(SOURCE, [], [namespace_vm, manual])

    assert result.actions == ()


def test_a_tap_name_now_used_by_a_running_vm_evicts_its_old_holder_first() -> None:
    # VM2 stopped while nobody watched; VM1 started and libvirt gave it VM2's old tap name.
    old_holder = port(P2, MAC2, host=SOURCE, tap="vnet0", vm="vm-anything")
    new = port(P1, MAC1)

    result = plan_on(
        SOURCE, [domain(VM1, "running", (MAC1, "vnet0"))], [old_holder, new], scope=frozenset({VM1})
    )

    assert result.actions == (
        domain_xml.ReleasePort(
            port_id=P2, delete=False, reason="interface vnet0 now belongs to another VM"
        ),
        domain_xml.BindPort(port_id=P1, interface="vnet0", vm_id=VM1),
    ), "the release comes first: (host, interface) is unique"


def test_a_port_stale_on_this_host_may_be_taken_by_a_running_vm_in_a_full_reconcile() -> None:
    stale = port(P1, MAC1, host=SOURCE, tap="tap-old", vm=VM2)

    result = plan_on(SOURCE, [domain(VM1, "running", (MAC1, "tap1"))], [stale])

    assert result.actions == (domain_xml.BindPort(port_id=P1, interface="tap1", vm_id=VM1),)


def test_a_port_of_another_running_vm_is_not_taken() -> None:
    elsewhere = port(P1, MAC1, host=DEST, tap="tap9", vm=VM2)

    result = plan_on(SOURCE, [domain(VM1, "running", (MAC1, "tap1"))], [elsewhere])

    assert result.actions == ()
    assert result.reports[0].state == "unmatched"
    assert VM2 in (result.reports[0].reason or "")


def test_two_interfaces_claiming_one_port_bind_it_once() -> None:
    result = plan_on(
        SOURCE,
        [domain(VM1, "running", (MAC1, "tap1")), domain(VM2, "running", (MAC1, "tap2"))],
        [port(P1, MAC1)],
    )

    assert result.actions == (domain_xml.BindPort(port_id=P1, interface="tap1", vm_id=VM1),)
    assert [r.state for r in result.reports] == ["bound", "unmatched"]


def test_hot_unplugged_interface_releases_its_port() -> None:
    unplugged = port(P2, MAC2, host=SOURCE, tap="tap2", vm=VM1, origin="libvirt")
    kept = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1)

    result = plan_on(
        SOURCE, [domain(VM1, "running", (MAC1, "tap1"))], [unplugged, kept], scope=frozenset({VM1})
    )

    assert result.actions == (
        domain_xml.ReleasePort(
            port_id=P2, delete=True, reason=f"VM {VM1} no longer has interface tap2"
        ),
    )


def test_hot_plugged_interface_with_metadata_gets_a_new_port() -> None:
    request = domain_xml.NetworkRequest(network_id=NET)
    kept = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1, origin="libvirt")

    result = plan_on(
        SOURCE,
        [domain(VM1, "running", (MAC1, "tap1"), (MAC2, "tap2"), network=request)],
        [kept],
        scope=frozenset({VM1}),
        networks={request: domain_xml.NetworkResolution(network_id=NET)},
    )

    assert result.actions == (
        domain_xml.CreatePort(
            network_id=NET, mac=MAC2, interface="tap2", vm_id=VM1, name="vm-aaaa-net1"
        ),
    )


# ---- live migration: the destination takes the port once the migration completed ---------


def test_incoming_migration_does_not_take_the_port_from_the_source() -> None:
    on_source = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1)

    result = plan_on(DEST, [domain(VM1, "migrating", (MAC1, "tap1"))], [on_source])

    assert result.actions == ()
    assert result.reports[0].state == "pending"


def test_a_paused_vm_does_not_take_a_port_bound_elsewhere() -> None:
    on_source = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1)

    result = plan_on(DEST, [domain(VM1, "paused", (MAC1, "tap1"))], [on_source])

    assert result.actions == ()
    assert result.reports[0].state == "pending"


def test_a_paused_vm_binds_a_free_port() -> None:
    result = plan_on(SOURCE, [domain(VM1, "paused", (MAC1, "tap1"))], [port(P1, MAC1)])

    assert result.actions == (domain_xml.BindPort(port_id=P1, interface="tap1", vm_id=VM1),)


def test_completed_migration_moves_the_binding_to_the_destination() -> None:
    on_source = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1, origin="libvirt")

    result = plan_on(
        DEST, [domain(VM1, "running", (MAC1, "vnet3"))], [on_source], scope=frozenset({VM1})
    )

    assert result.actions == (domain_xml.BindPort(port_id=P1, interface="vnet3", vm_id=VM1),)


def test_the_source_keeps_the_binding_while_migrating_out() -> None:
    on_source = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1)

    result = plan_on(SOURCE, [domain(VM1, "migrating", (MAC1, "tap1"))], [on_source])

    assert result.actions == ()


def test_the_source_keeps_the_binding_after_migrated_away_until_the_grace_ends() -> None:
    on_source = port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1, origin="libvirt")

    during_grace = plan_on(SOURCE, [], [on_source], keep=frozenset({VM1}))
    event_during_grace = plan_on(
        SOURCE, [], [on_source], scope=frozenset({VM1}), keep=frozenset({VM1})
    )
    after_grace = plan_on(SOURCE, [], [on_source])

    assert during_grace.actions == ()
    assert event_during_grace.actions == ()
    assert after_grace.actions == (
        domain_xml.ReleasePort(
            port_id=P1, delete=True, reason=f"VM {VM1} is not running on this host"
        ),
    ), "no destination took it: the source's flows go"


def test_the_source_does_nothing_once_the_destination_holds_the_binding() -> None:
    moved = port(P1, MAC1, host=DEST, tap="vnet3", vm=VM1, origin="libvirt")

    assert plan_on(SOURCE, [], [moved], scope=frozenset({VM1})).actions == ()
    assert plan_on(SOURCE, [], [moved]).actions == ()


# ---- events and states ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "detail", "effect"),
    [
        (
            libvirt.VIR_DOMAIN_EVENT_STARTED,
            libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED,
            EventEffect(True),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STARTED,
            libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
            EventEffect(True),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_RESUMED,
            libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
            EventEffect(True),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
            EventEffect(True),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
            EventEffect(True),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
            EventEffect(refresh=True, migrated_away=True),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
            EventEffect(True),
        ),
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, 0, EventEffect(True)),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, 0, EventEffect(True)),
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, 0, EventEffect(False)),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 0, EventEffect(False)),
    ],
)
def test_lifecycle_events(event: int, detail: int, effect: EventEffect) -> None:
    assert lifecycle_effect(event, detail) == effect


@pytest.mark.parametrize(
    ("state", "reason", "activity"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, "running"),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED, "running"),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY, "running"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, "paused"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP, "paused"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, "migrating"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, "migrating"),
        (libvirt.VIR_DOMAIN_SHUTDOWN, 0, "running"),
        (libvirt.VIR_DOMAIN_SHUTOFF, 0, "inactive"),
        (libvirt.VIR_DOMAIN_CRASHED, 0, "inactive"),
    ],
)
def test_domain_states(state: int, reason: int, activity: domain_xml.DomainActivity) -> None:
    assert domain_activity(state, reason) == activity


def test_migration_sequence_unbinds_the_source_only_after_the_destination_bound() -> None:
    """Replay both hosts' views through a migration and check the order of bindings."""
    ports = {P1: port(P1, MAC1, host=SOURCE, tap="tap1", vm=VM1, origin="libvirt")}

    def apply(host: str, plan: domain_xml.BindingPlan) -> list[str]:
        done = []
        for action in plan.actions:
            current = (
                ports[action.port_id] if not isinstance(action, domain_xml.CreatePort) else None
            )
            if isinstance(action, domain_xml.BindPort) and current is not None:
                ports[action.port_id] = port(
                    current.id,
                    current.mac,
                    host=host,
                    tap=action.interface,
                    vm=action.vm_id,
                    origin=current.origin,
                )
                done.append(f"bind {host[:4]}")
            elif isinstance(action, domain_xml.ReleasePort):
                del ports[action.port_id]
                done.append(f"release {host[:4]}")
        return done

    history: list[str] = []
    # 1. the destination starts the incoming domain (STARTED/MIGRATED): paused for migration
    history += apply(
        DEST,
        plan_on(
            DEST,
            [domain(VM1, "migrating", (MAC1, "vnet3"))],
            list(ports.values()),
            scope=frozenset({VM1}),
        ),
    )
    # 2. the source pauses for the final phase (SUSPENDED/MIGRATED)
    history += apply(
        SOURCE,
        plan_on(
            SOURCE,
            [domain(VM1, "migrating", (MAC1, "tap1"))],
            list(ports.values()),
            scope=frozenset({VM1}),
        ),
    )
    # 3. the source's domain stops (STOPPED/MIGRATED): the watcher keeps its bindings
    keep = (
        frozenset({VM1})
        if lifecycle_effect(
            libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED
        ).migrated_away
        else frozenset()
    )
    history += apply(
        SOURCE, plan_on(SOURCE, [], list(ports.values()), scope=frozenset({VM1}), keep=keep)
    )
    # 4. a periodic full reconcile on the source during the grace
    history += apply(SOURCE, plan_on(SOURCE, [], list(ports.values()), keep=keep))
    # 5. the destination resumes (RESUMED/MIGRATED): running
    history += apply(
        DEST,
        plan_on(
            DEST,
            [domain(VM1, "running", (MAC1, "vnet3"))],
            list(ports.values()),
            scope=frozenset({VM1}),
        ),
    )
    # 6. the grace ends on the source: full reconcile
    history += apply(SOURCE, plan_on(SOURCE, [], list(ports.values())))

    assert history == [f"bind {DEST[:4]}"]
    assert ports[P1].host_id == DEST
    assert ports[P1].interface == "vnet3"


def test_hosts_sharing_a_libvirt_uri_are_watched_once() -> None:
    first = WatchedHost(id=SOURCE, name="a", libvirt_uri="qemu:///system")
    twin = WatchedHost(id=DEST, name="b", libvirt_uri="qemu:///system")
    remote = WatchedHost(id=VM1, name="c", libvirt_uri="qemu+ssh://c/system")

    watched, shadowed = hosts_to_watch([first, twin, remote])

    assert watched == [first, remote]
    assert shadowed == [(twin, first)]
