"""Domain XML parsing and the three matching rules (interfaceid, MAC, metadata network)."""

from __future__ import annotations

import pytest

from api.libvirt.domain_xml import (
    FABRIC_XMLNS,
    BindingPlan,
    BindPort,
    CreatePort,
    DomainDescription,
    DomainInterface,
    DomainXmlError,
    NetworkRequest,
    NetworkResolution,
    ObservedDomain,
    PortRecord,
    is_libvirt_vm_id,
    parse_domain,
    plan_bindings,
    unwireable_reason,
)

pytestmark = pytest.mark.unit

HOST = "11111111-0000-0000-0000-000000000001"
VM = "3db80e2a-1fae-484d-a36b-b8a42e2ef2c5"
PORT_A = "aaaaaaaa-0000-0000-0000-00000000000a"
PORT_B = "bbbbbbbb-0000-0000-0000-00000000000b"
NET = "eeeeeeee-0000-0000-0000-00000000000e"

# Trimmed from `virsh dumpxml` of a running domain (libvirt 9.0).
LIVE_XML = f"""
<domain type='qemu' id='1'>
  <name>web-1</name>
  <uuid>3DB80E2A-1FAE-484D-A36B-B8A42E2EF2C5</uuid>
  <metadata>
    <other:thing xmlns:other="https://example.org/other" id="not-ours"/>
    <fabric:network xmlns:fabric="{FABRIC_XMLNS}" name="web" tenant="acme">
      <fabric:interface mac="52:54:00:AA:00:03" id="{NET.upper()}"/>
    </fabric:network>
  </metadata>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'>
      <mac address='52:54:00:aa:00:01'/>
      <source bridge='br-int'/>
      <virtualport type='openvswitch'>
        <parameters interfaceid='{PORT_A.upper()}'/>
      </virtualport>
      <target dev='vnet0'/>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
    <interface type='ethernet'>
      <mac address='52:54:00:aa:00:02'/>
      <target dev='tapweb1' managed='yes'/>
      <model type='virtio'/>
      <alias name='net1'/>
    </interface>
    <interface type='ethernet'>
      <mac address='52:54:00:aa:00:03'/>
      <target dev='tapweb2' managed='yes'/>
      <alias name='net2'/>
    </interface>
    <interface type='network'>
      <source network='default'/>
    </interface>
  </devices>
</domain>
"""


def test_live_xml_gives_each_nic_with_its_tap_and_ids() -> None:
    domain = parse_domain(LIVE_XML)

    assert domain.uuid == VM
    assert domain.name == "web-1"
    assert domain.interfaces == (
        DomainInterface(
            mac="52:54:00:aa:00:01",
            kind="bridge",
            target="vnet0",
            source_bridge="br-int",
            virtualport="openvswitch",
            interface_id=PORT_A,
            alias="net0",
        ),
        DomainInterface(mac="52:54:00:aa:00:02", kind="ethernet", target="tapweb1", alias="net1"),
        DomainInterface(mac="52:54:00:aa:00:03", kind="ethernet", target="tapweb2", alias="net2"),
    ), "the MAC-less <interface> of an inactive definition is skipped"


def test_metadata_in_our_namespace_names_the_network_per_domain_and_per_mac() -> None:
    domain = parse_domain(LIVE_XML)

    assert domain.network == NetworkRequest(name="web", tenant="acme")
    assert domain.network_for("52:54:00:aa:00:01") == NetworkRequest(name="web", tenant="acme")
    assert domain.network_for("52:54:00:aa:00:03") == NetworkRequest(network_id=NET)
    assert domain.network_requests() == {
        NetworkRequest(name="web", tenant="acme"),
        NetworkRequest(network_id=NET),
    }


def test_metadata_of_other_namespaces_or_none_names_no_network() -> None:
    no_metadata = f"<domain><name>a</name><uuid>{VM}</uuid></domain>"
    foreign = (
        f"<domain><name>a</name><uuid>{VM}</uuid><metadata>"
        '<x:network xmlns:x="https://example.org/x" id="n"/></metadata></domain>'
    )
    empty_ours = (
        f"<domain><name>a</name><uuid>{VM}</uuid><metadata>"
        f'<f:network xmlns:f="{FABRIC_XMLNS}"/></metadata></domain>'
    )

    for xml in (no_metadata, foreign, empty_ours):
        domain = parse_domain(xml)
        assert domain.network is None
        assert domain.network_for("52:54:00:00:00:01") is None


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<domain><name>a", "does not parse"),
        ("<network><name>a</name></network>", "expected a <domain>"),
        ("<domain><name>a</name></domain>", "needs <uuid> and <name>"),
    ],
)
def test_what_is_not_a_domain_is_refused(xml: str, message: str) -> None:
    with pytest.raises(DomainXmlError, match=message):
        parse_domain(xml)


def ovs_tap(kind: str = "bridge", bridge: str = "br-int") -> DomainInterface:
    """A tap libvirt plugs into the OVS bridge `bridge` (interface type `kind`)."""
    return DomainInterface(
        mac="m", kind=kind, target="vnet0", source_bridge=bridge, virtualport="openvswitch"
    )


@pytest.mark.parametrize(
    ("interface", "reason"),
    [
        (DomainInterface(mac="m", kind="ethernet", target="tap1"), None),
        (ovs_tap(), None),
        (ovs_tap(kind="network"), None),
        (ovs_tap(bridge="br-ex"), "OVS bridge 'br-ex', not the integration bridge 'br-int'"),
        (
            DomainInterface(mac="m", kind="bridge", target="vnet0", source_bridge="virbr0"),
            "Linux bridge 'virbr0'",
        ),
        (DomainInterface(mac="m", kind="direct", target="macvtap0"), "type 'direct'"),
        (DomainInterface(mac="m", kind="ethernet"), "no tap device"),
    ],
)
def test_only_taps_the_service_may_attach_are_wireable(
    interface: DomainInterface, reason: str | None
) -> None:
    found = unwireable_reason(interface, "br-int")
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_vm_ids_of_libvirt_domains_are_uuids() -> None:
    assert is_libvirt_vm_id(VM)
    assert is_libvirt_vm_id(VM.upper())
    assert not is_libvirt_vm_id("vm-web-1")
    assert not is_libvirt_vm_id("")
    assert not is_libvirt_vm_id(None)


# ---- the three matching rules -------------------------------------------------------------


def running(*interfaces: DomainInterface, network: NetworkRequest | None = None) -> ObservedDomain:
    return ObservedDomain(
        DomainDescription(uuid=VM, name="web-1", interfaces=interfaces, network=network), "running"
    )


def ovs_nic(mac: str, interface_id: str | None, tap: str = "vnet0") -> DomainInterface:
    return DomainInterface(
        mac=mac,
        kind="bridge",
        target=tap,
        source_bridge="br-int",
        virtualport="openvswitch",
        interface_id=interface_id,
        alias="net0",
    )


def tap_nic(mac: str, tap: str = "tap0") -> DomainInterface:
    return DomainInterface(mac=mac, kind="ethernet", target=tap, alias="net1")


def plan(
    domain: ObservedDomain,
    *ports: PortRecord,
    networks: dict[NetworkRequest, NetworkResolution] | None = None,
) -> BindingPlan:
    return plan_bindings(
        host_id=HOST,
        domains=[domain],
        ports=ports,
        networks=networks or {},
        integration_bridge="br-int",
        scope=frozenset({domain.uuid}),
    )


def test_rule_1_interfaceid_names_the_port() -> None:
    port = PortRecord(id=PORT_A, network_id=NET, mac="52:54:00:aa:00:01")
    decoy = PortRecord(id=PORT_B, network_id=NET, mac="52:54:00:aa:00:99")

    result = plan(running(ovs_nic("52:54:00:aa:00:01", PORT_A)), port, decoy)

    assert result.actions == (BindPort(port_id=PORT_A, interface="vnet0", vm_id=VM),)
    assert [(r.state, r.port_id, r.match) for r in result.reports] == [
        ("bound", PORT_A, "interfaceid")
    ]


def test_rule_2_mac_names_the_port_when_no_interfaceid_matches() -> None:
    # libvirt invents a random interfaceid when none is given: it matches no port.
    port = PortRecord(id=PORT_B, network_id=NET, mac="52:54:00:aa:00:01")

    for nic in (
        ovs_nic("52:54:00:aa:00:01", "12345678-0000-0000-0000-000000000000"),
        tap_nic("52:54:00:aa:00:01"),
    ):
        result = plan(running(nic), port)
        assert result.actions == (BindPort(port_id=PORT_B, interface=nic.target or "", vm_id=VM),)
        assert result.reports[0].match == "mac"


def test_rule_3_metadata_network_creates_a_port_with_the_interface_mac() -> None:
    request = NetworkRequest(name="web")
    domain = running(tap_nic("52:54:00:aa:00:02", tap="tapweb1"), network=request)

    result = plan(domain, networks={request: NetworkResolution(network_id=NET)})

    assert result.actions == (
        CreatePort(
            network_id=NET,
            mac="52:54:00:aa:00:02",
            interface="tapweb1",
            vm_id=VM,
            name="web-1-net1",
        ),
    )
    assert result.reports[0].state == "bound"
    assert result.reports[0].match == "metadata"


def test_the_port_created_from_metadata_is_found_again_by_its_mac() -> None:
    created = PortRecord(id=PORT_B, network_id=NET, mac="52:54:00:aa:00:02", origin="libvirt")

    result = plan(running(tap_nic("52:54:00:aa:00:02")), created)

    assert result.actions == (BindPort(port_id=PORT_B, interface="tap0", vm_id=VM),)
    assert result.reports[0].match == "metadata", "the rule that made the port, not 'mac'"


def test_an_existing_port_wins_over_the_metadata_network() -> None:
    request = NetworkRequest(network_id=NET)
    port = PortRecord(id=PORT_B, network_id=NET, mac="52:54:00:aa:00:02")

    result = plan(
        running(tap_nic("52:54:00:aa:00:02"), network=request),
        port,
        networks={request: NetworkResolution(network_id=NET)},
    )

    assert result.actions == (BindPort(port_id=PORT_B, interface="tap0", vm_id=VM),)


def test_an_interface_matching_nothing_is_left_alone_and_reported() -> None:
    result = plan(running(ovs_nic("52:54:00:aa:00:07", "12345678-0000-0000-0000-000000000000")))

    assert result.actions == ()
    (report,) = result.reports
    assert report.state == "unmatched"
    assert report.interface == "vnet0"
    assert report.reason is not None
    assert "MAC 52:54:00:aa:00:07" in report.reason
    assert "names no network" in report.reason


def test_a_metadata_network_that_does_not_resolve_is_reported() -> None:
    request = NetworkRequest(name="nope")
    result = plan(
        running(tap_nic("52:54:00:aa:00:02"), network=request),
        networks={request: NetworkResolution(error="no network named 'nope'")},
    )

    assert result.actions == ()
    assert result.reports[0].state == "unmatched"
    assert result.reports[0].reason == "no network named 'nope'"


def test_interfaceid_of_a_port_with_another_mac_is_refused() -> None:
    # Binding it would pass the anti-spoofing flows a MAC the VM never uses.
    port = PortRecord(id=PORT_A, network_id=NET, mac="52:54:00:aa:00:99")

    result = plan(running(ovs_nic("52:54:00:aa:00:01", PORT_A)), port)

    assert result.actions == ()
    assert result.reports[0].state == "unmatched"
    assert "52:54:00:aa:00:99" in (result.reports[0].reason or "")


def test_an_interface_the_service_may_not_attach_is_reported_not_bound() -> None:
    port = PortRecord(id=PORT_B, network_id=NET, mac="52:54:00:aa:00:01")
    linux_bridge = DomainInterface(
        mac="52:54:00:aa:00:01", kind="bridge", target="vnet0", source_bridge="virbr0"
    )

    result = plan(running(linux_bridge), port)

    assert result.actions == ()
    assert result.reports[0].state == "unmatched"
    assert "Linux bridge" in (result.reports[0].reason or "")


def test_created_port_names_fit_the_column() -> None:
    request = NetworkRequest(network_id=NET)
    long_name = "x" * 80
    domain = ObservedDomain(
        DomainDescription(
            uuid=VM, name=long_name, interfaces=(tap_nic("52:54:00:aa:00:02"),), network=request
        ),
        "running",
    )

    result = plan(domain, networks={request: NetworkResolution(network_id=NET)})

    (action,) = result.actions
    assert isinstance(action, CreatePort)
    assert len(action.name) == 64
    assert action.name.endswith("-net1")


# ---- a port cannot capture another tenant's VM (issue 10, defect 6) ------------------------

TENANT_A = "aaaaaaaa-0000-4000-8000-0000000000a0"
TENANT_B = "bbbbbbbb-0000-4000-8000-0000000000b0"
NET_B = "bbbbbbbb-0000-4000-8000-0000000000be"


def test_a_port_of_another_tenant_with_the_vms_mac_is_not_bound() -> None:
    # B's VM asks for B's network; A pre-created a port with the VM's MAC.
    request = NetworkRequest(name="web", tenant="tenant-b")
    trap = PortRecord(id=PORT_A, network_id=NET, mac="52:54:00:aa:00:02", tenant_id=TENANT_A)
    networks = {request: NetworkResolution(network_id=NET_B, tenant_id=TENANT_B)}

    for nic in (
        tap_nic("52:54:00:aa:00:02"),
        ovs_nic("52:54:00:aa:00:02", "12345678-0000-0000-0000-000000000000"),
    ):
        result = plan(running(nic, network=request), trap, networks=networks)

        assert result.actions == (), "neither bound to A's port nor a new port (the MAC is A's)"
        (report,) = result.reports
        assert (report.state, report.match) == ("unmatched", "mac")
        assert report.reason is not None and "another tenant" in report.reason


def test_a_port_of_the_vms_own_tenant_with_its_mac_is_bound() -> None:
    request = NetworkRequest(name="web", tenant="tenant-b")
    own = PortRecord(id=PORT_B, network_id=NET_B, mac="52:54:00:aa:00:02", tenant_id=TENANT_B)
    networks = {request: NetworkResolution(network_id=NET_B, tenant_id=TENANT_B)}

    result = plan(running(tap_nic("52:54:00:aa:00:02"), network=request), own, networks=networks)

    assert result.actions == (BindPort(port_id=PORT_B, interface="tap0", vm_id=VM),)


def test_a_mac_match_under_metadata_that_names_no_existing_network_is_not_bound() -> None:
    request = NetworkRequest(name="nope")
    trap = PortRecord(id=PORT_A, network_id=NET, mac="52:54:00:aa:00:02", tenant_id=TENANT_A)
    networks = {request: NetworkResolution(error="metadata names network named 'nope'")}

    result = plan(running(tap_nic("52:54:00:aa:00:02"), network=request), trap, networks=networks)

    assert result.actions == ()
    assert result.reports[0].state == "unmatched"


def test_the_per_interface_metadata_decides_for_its_mac() -> None:
    default = NetworkRequest(name="web", tenant="tenant-a")
    per_nic = NetworkRequest(name="web", tenant="tenant-b")
    mac = "52:54:00:aa:00:02"
    domain = ObservedDomain(
        DomainDescription(
            uuid=VM,
            name="web-1",
            interfaces=(tap_nic(mac),),
            network=default,
            interface_networks=((mac, per_nic),),
        ),
        "running",
    )
    trap = PortRecord(id=PORT_A, network_id=NET, mac=mac, tenant_id=TENANT_A)
    networks = {
        default: NetworkResolution(network_id=NET, tenant_id=TENANT_A),
        per_nic: NetworkResolution(network_id=NET_B, tenant_id=TENANT_B),
    }

    assert plan(domain, trap, networks=networks).actions == ()


def test_an_interfaceid_still_names_its_port_whatever_the_metadata() -> None:
    # The interfaceid is written by whoever defines the domain (the operator), not a tenant.
    request = NetworkRequest(name="web", tenant="tenant-b")
    port = PortRecord(id=PORT_A, network_id=NET, mac="52:54:00:aa:00:01", tenant_id=TENANT_A)
    networks = {request: NetworkResolution(network_id=NET_B, tenant_id=TENANT_B)}

    result = plan(
        running(ovs_nic("52:54:00:aa:00:01", PORT_A), network=request), port, networks=networks
    )

    assert result.actions == (BindPort(port_id=PORT_A, interface="vnet0", vm_id=VM),)
