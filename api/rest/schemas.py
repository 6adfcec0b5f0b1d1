"""Request and response bodies of the REST API (pydantic v2).

Requests forbid unknown fields and use strict types ("5" is not a number).
PATCH models declare their immutable fields (type `Immutable`) so that trying
to change one is a 422 that names the field, rather than a generic "extra
field" error. Fields a request and a response share are declared once, in a
`...Fields` base.
PATCH fields that may not be null are declared with their non-null type and a
default the validator never sees: an explicit ``null`` is then rejected, an
absent field means "unchanged". Read PATCH bodies with
``model_dump(exclude_unset=True)`` only.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from api.store import models
from api.validation import (
    check_host_address,
    check_interface_name,
    check_libvirt_uri,
    check_no_nul,
    check_ovsdb_remote,
    check_unicast_ip,
    check_unicast_ipv4,
    normalize_mac,
    parse_ipv4_network,
    parse_ipv6_network,
)
from controller.core.pipeline.load_balancer import PROBE_PORT_BASE, PROBE_PORT_COUNT

T = TypeVar("T")


def _check_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a UUID") from None


def _check_ipv4(text: str) -> str:
    try:
        return check_unicast_ipv4(text)
    except ipaddress.AddressValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def _check_ip(text: str) -> str:
    try:
        return check_unicast_ip(text)
    except ipaddress.AddressValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


# Path and query parameters that are free text (ids, filters); bodies are checked by
# `RequestModel`. Either way a NUL is a 422 on every database, never a 500 on PostgreSQL.
Text = Annotated[str, AfterValidator(check_no_nul)]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
]
Description = Annotated[str, StringConstraints(max_length=1024)]
Uuid = Annotated[str, AfterValidator(_check_uuid)]
IPv4 = Annotated[str, AfterValidator(_check_ipv4)]
Cidr = Annotated[str, AfterValidator(lambda text: str(parse_ipv4_network(text)))]
IpAddress = Annotated[str, AfterValidator(_check_ip)]
Ipv6Cidr = Annotated[str, AfterValidator(lambda text: str(parse_ipv6_network(text)))]
Mac = Annotated[str, AfterValidator(normalize_mac)]
InterfaceName = Annotated[str, AfterValidator(check_interface_name)]
OvsdbRemote = Annotated[str, AfterValidator(check_ovsdb_remote)]
LibvirtUri = Annotated[str, AfterValidator(check_libvirt_uri)]
VmId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
L4Port = Annotated[int, Field(ge=1, le=65535)]
SegmentationId = Annotated[int, Field(ge=1, le=16_777_215)]
Interval = Annotated[float, Field(ge=0.1, le=3600)]
Timeout = Annotated[float, Field(ge=0.05, le=3600)]
Threshold = Annotated[int, Field(ge=1, le=10)]
PortIps = Annotated[list[IpAddress], Field(max_length=64)]
Mtu = Annotated[int, Field(ge=576, le=9216)]
DnsServers = Annotated[list[IPv4], Field(max_length=8)]
Backends = Annotated[list["BackendIn"], Field(max_length=256)]
NetworkType = Literal["vlan", "vxlan"]
PortStatus = Literal["DOWN", "ACTIVE", "ERROR"]
Protocol = Literal["tcp", "udp"]
_IMMUTABLE = "immutable"  # a marker in the field's metadata
# A PATCH field refused when present (and not advertised in the schema).
Immutable = Annotated[SkipJsonSchema[Any], _IMMUTABLE]
# Default of a PATCH field that may not be null: absent means "unchanged", and
# since pydantic never validates defaults, an explicit null is still rejected.
UNCHANGED: Any = None


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _reject_nul(cls, value: Any) -> Any:
        """Every string of every body (lists included; nested bodies check their own)."""
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                check_no_nul(text)
        return value


class PatchModel(RequestModel):
    """Base of PATCH bodies; fields declared as `Immutable` fail when present."""

    immutable_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.immutable_fields = frozenset(
            name for name, field in cls.model_fields.items() if _IMMUTABLE in field.metadata
        )

    @field_validator("*", mode="before")
    @classmethod
    def _reject_immutable(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in cls.immutable_fields:
            raise ValueError(
                "cannot be changed after creation (delete and re-create the resource instead)"
            )
        return value

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude=set(self.immutable_fields))


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, found: Any, convert: Callable[[Any], T]) -> Self:
        """The response page for `found` (a `resources.Page` of rows), each row converted."""
        return cls(
            items=[convert(row) for row in found.items],
            total=found.total,
            limit=found.limit,
            offset=found.offset,
        )


class ResourceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    updated_at: datetime
    revision: int

    @classmethod
    def of(cls, row: Any) -> Self:
        """The response body for an ORM row (columns read by field name)."""
        return cls.model_validate(row)


# ---- hosts -----------------------------------------------------------------------


class HostFields(BaseModel):
    name: Name
    ovsdb_remote: OvsdbRemote
    libvirt_uri: LibvirtUri | None = None
    tunnel_ip: IPv4 | None = None
    uplink: InterfaceName | None = None


class HostCreate(RequestModel, HostFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "compute-1",
                    "ovsdb_remote": "tcp:192.0.2.11:6640",
                    "libvirt_uri": "qemu+ssh://root@192.0.2.11/system",
                    "tunnel_ip": "192.0.2.11",
                    "uplink": "eth1",
                }
            ]
        }
    )


class HostUpdate(PatchModel, HostFields):
    model_config = ConfigDict(json_schema_extra={"examples": [{"tunnel_ip": "192.0.2.12"}]})
    datapath_id: Immutable = None
    ovsdb_connected: Immutable = None
    openflow_connected: Immutable = None
    last_error: Immutable = None
    flow_count: Immutable = None
    group_count: Immutable = None

    name: Name = UNCHANGED
    ovsdb_remote: OvsdbRemote = UNCHANGED


class HostOut(ResourceOut, HostFields):
    datapath_id: str | None
    ovsdb_connected: bool
    openflow_connected: bool
    last_error: str | None
    status_at: datetime | None
    flow_count: int | None = Field(
        default=None, description="Flows on the host's switch after the last pass (null: unknown)."
    )
    group_count: int | None = Field(
        default=None, description="Groups on the host's switch after the last pass (null: unknown)."
    )


# ---- tenants ---------------------------------------------------------------------


class TenantFields(BaseModel):
    name: Name
    description: Description = ""


class TenantCreate(RequestModel, TenantFields):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "acme", "description": "ACME Corp."}]}
    )


class TenantUpdate(PatchModel, TenantFields):
    model_config = ConfigDict(json_schema_extra={"examples": [{"description": "ACME Corp. (EU)"}]})

    name: Name = UNCHANGED
    description: Description = UNCHANGED


class TenantOut(ResourceOut, TenantFields):
    pass


class TokenCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "ci-pipeline"},
                {"name": "audit", "expires_at": "2030-01-01T00:00:00Z"},
            ]
        }
    )

    name: Name
    expires_at: Annotated[AwareDatetime, Field(strict=False)] | None = Field(
        default=None,
        description="When the token stops working (401), with a time zone; "
        "absent: it works until revoked.",
    )


class TokenInfoOut(BaseModel):
    """A token as lists show it: everything but the token itself (only its hash is kept)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    tenant_id: str | None
    created_at: datetime
    expires_at: datetime | None


class TokenOut(TokenInfoOut):
    token: str = Field(description="The bearer token. Shown only in this response.")


# ---- networks --------------------------------------------------------------------


def _check_gateway(cidr: str | None, gateway: str | None) -> None:
    if gateway is None:
        return
    if cidr is None:
        raise ValueError("gateway needs a cidr")
    check_host_address(ipaddress.IPv4Address(gateway), ipaddress.IPv4Network(cidr))


class NetworkFields(BaseModel):
    name: Name
    type: NetworkType
    cidr: Cidr | None = None
    ipv6_cidr: Ipv6Cidr | None = Field(
        default=None,
        description="The network's IPv6 prefix (e.g. fd00:1::/64), besides or instead of cidr: "
        "its ports get an address from it. Set at creation.",
    )
    gateway: IPv4 | None = None
    mtu: Mtu | None = Field(
        default=None,
        description="The VMs' interface MTU, advertised by DHCP (option 26). Default: the "
        "underlay MTU minus 50 (VXLAN encapsulation) for VXLAN, 1500 for VLAN; at most "
        "what the segment carries (the underlay MTU, minus 50 for VXLAN). Set at creation.",
    )
    dhcp_enabled: bool = Field(
        default=True,
        description="The service answers DHCP for ports with an address in the cidr "
        "(address, gateway, DNS, lease time, MTU); off: VMs' DHCP is dropped unanswered.",
    )
    dns_servers: DnsServers = Field(default=[], description="Advertised by DHCP (option 6).")


class NetworkCreate(RequestModel, NetworkFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "web", "type": "vxlan", "cidr": "10.0.0.0/24", "gateway": "10.0.0.1"},
                {
                    "tenant_id": "4f1c2a4e-8d9b-4f57-9d7e-0d3c1f6f2b10",
                    "name": "storage",
                    "type": "vlan",
                    "segmentation_id": 120,
                },
            ]
        }
    )

    tenant_id: Uuid | None = Field(
        default=None, description="Required with an admin token; implied by a tenant token."
    )
    segmentation_id: SegmentationId | None = Field(
        default=None, description="Admin only; allocated from the configured ranges when absent."
    )

    @field_validator("gateway")
    @classmethod
    def _gateway_inside_cidr(cls, gateway: str | None, info: ValidationInfo) -> str | None:
        if "cidr" in info.data:  # else cidr itself is invalid and already reported
            _check_gateway(info.data["cidr"], gateway)
        return gateway


class NetworkUpdate(PatchModel, NetworkFields):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "web-frontend"}]})
    tenant_id: Immutable = None
    type: Immutable = None
    segmentation_id: Immutable = None
    cidr: Immutable = None
    ipv6_cidr: Immutable = None
    mtu: Immutable = None

    name: Name = UNCHANGED


class NetworkOut(ResourceOut, NetworkFields):
    tenant_id: str
    segmentation_id: int
    mtu: int


# ---- ports -----------------------------------------------------------------------


class PortFields(BaseModel):
    name: Name | None = None
    host_id: Uuid | None = None
    interface: InterfaceName | None = None
    vm_id: VmId | None = None


class PortCreate(RequestModel, PortFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"network_id": "9a0e6c52-3f0b-4a8e-9b7a-5f1e2d3c4b5a", "name": "web-1"},
                {
                    "network_id": "9a0e6c52-3f0b-4a8e-9b7a-5f1e2d3c4b5a",
                    "mac": "02:00:00:00:00:10",
                    "ips": ["10.0.0.10"],
                    "host_id": "0b7d3c1e-2a4f-4e6b-8c9d-1e2f3a4b5c6d",
                    "interface": "tap-web1",
                    "vm_id": "web-1",
                },
            ]
        }
    )

    network_id: Uuid
    mac: Mac | None = Field(default=None, description="Allocated (02:xx:...) when absent.")
    ips: PortIps | None = Field(
        default=None,
        description="IPv4 and IPv6 addresses. Absent: the lowest free address of the network's "
        "cidr and of its ipv6_cidr (each the network has). [] for none.",
    )


class PortUpdate(PatchModel, PortFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"host_id": "0b7d3c1e-2a4f-4e6b-8c9d-1e2f3a4b5c6d", "interface": "tap-web1"},
                {"host_id": None, "interface": None},
            ]
        }
    )
    network_id: Immutable = None
    tenant_id: Immutable = None
    origin: Immutable = None
    status: Immutable = None

    mac: Mac = UNCHANGED
    ips: PortIps = UNCHANGED


class BindingOut(BaseModel):
    host_id: str | None
    interface: str | None
    vm_id: str | None
    bound_at: datetime | None


class PortOut(ResourceOut):
    network_id: str
    tenant_id: str
    name: str | None
    mac: str
    ips: list[str]
    origin: Literal["api", "libvirt"]
    binding: BindingOut
    status: PortStatus
    status_at: datetime | None
    activation_seconds: float | None

    @classmethod
    def of(cls, port: models.Port) -> Self:
        return cls.model_validate(
            {
                **_columns(port, cls, exclude={"binding"}),
                "binding": _columns(port, BindingOut, exclude=set()),
            }
        )


def _columns(row: Any, model: type[BaseModel], *, exclude: set[str]) -> dict[str, Any]:
    """The attributes of `row` named like the fields of `model` (nested ones excluded)."""
    return {name: getattr(row, name) for name in model.model_fields if name not in exclude}


# ---- load balancers --------------------------------------------------------------


class HealthCheckIn(RequestModel):
    enabled: bool = True
    interval: Interval = 2.0
    timeout: Timeout = 1.0
    rise: Threshold = 2
    fall: Threshold = 2

    @field_validator("timeout")
    @classmethod
    def _timeout_within_interval(cls, timeout: float, info: ValidationInfo) -> float:
        if "interval" in info.data and timeout > info.data["interval"]:
            raise ValueError(f"must not exceed interval ({info.data['interval']} s)")
        return timeout


class HealthCheckPatch(RequestModel):
    enabled: bool = UNCHANGED
    interval: Interval = UNCHANGED
    timeout: Timeout = UNCHANGED
    rise: Threshold = UNCHANGED
    fall: Threshold = UNCHANGED


class BackendIn(RequestModel):
    ip: IPv4 | None = Field(default=None, description="Defaults to the first IP of port_id.")
    port: L4Port
    weight: int = Field(default=1, ge=1, le=100)
    port_id: Uuid | None = Field(default=None, description="A port of the same network.")

    @model_validator(mode="after")
    def _ip_or_port(self) -> Self:
        if self.ip is None and self.port_id is None:
            raise ValueError("a backend needs an ip or a port_id")
        return self


class LoadBalancerFields(BaseModel):
    network_id: Uuid
    name: Name
    vip: IPv4
    protocol: Protocol
    port: L4Port


class LoadBalancerCreate(RequestModel, LoadBalancerFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "network_id": "9a0e6c52-3f0b-4a8e-9b7a-5f1e2d3c4b5a",
                    "name": "web-http",
                    "vip": "10.0.0.100",
                    "protocol": "tcp",
                    "port": 80,
                    "health_check": {"interval": 2.0, "timeout": 1.0, "rise": 2, "fall": 2},
                    "backends": [
                        {"ip": "10.0.0.11", "port": 8080, "weight": 3},
                        {"port_id": "5c4b3a2f-1e0d-4c9b-8a7f-6e5d4c3b2a19", "port": 8080},
                    ],
                }
            ]
        }
    )

    health_check: HealthCheckIn = Field(default_factory=HealthCheckIn)
    backends: Backends = Field(default_factory=list)

    @field_validator("port")
    @classmethod
    def _outside_probe_ports(cls, port: int) -> int:
        # Health probes leave the switch from VIP:61440-61695; their answers are told
        # from client traffic by that destination port range alone.
        last = PROBE_PORT_BASE + PROBE_PORT_COUNT - 1
        if PROBE_PORT_BASE <= port <= last:
            raise ValueError(
                f"{port} is inside {PROBE_PORT_BASE}-{last}, the source ports of the health "
                "probes; a listener must use another port"
            )
        return port


class LoadBalancerUpdate(PatchModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"backends": [{"ip": "10.0.0.11", "port": 8080, "weight": 1}]},
                {"health_check": {"enabled": False}},
            ]
        }
    )
    network_id: Immutable = None
    tenant_id: Immutable = None
    vip: Immutable = None
    protocol: Immutable = None
    port: Immutable = None

    name: Name = UNCHANGED
    health_check: HealthCheckPatch = UNCHANGED
    backends: Backends = UNCHANGED


class HealthCheckOut(BaseModel):
    """The hc_* columns of a load balancer."""

    enabled: bool
    interval: float
    timeout: float
    rise: int
    fall: int


class BackendOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ip: str
    port: int
    weight: int
    port_id: str | None
    healthy: bool = Field(
        description="The last health-check verdict, which decides whether the backend "
        "gets connections (kept while the health is unknown)."
    )
    health_at: datetime | None
    health_unknown: str | None = Field(
        description="Why the health cannot be checked now (the switch that sends the "
        "backend's probes is not answering); null while checks work."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def health(self) -> Literal["healthy", "unhealthy", "unknown"]:
        """`unknown` while no verdict can be had: the backend keeps its last verdict."""
        if self.health_unknown is not None:
            return "unknown"
        return "healthy" if self.healthy else "unhealthy"


class LoadBalancerOut(ResourceOut, LoadBalancerFields):
    tenant_id: str
    health_check: HealthCheckOut
    backends: list[BackendOut]

    @classmethod
    def of(cls, lb: models.LoadBalancer) -> Self:
        health_check = {name: getattr(lb, f"hc_{name}") for name in HealthCheckOut.model_fields}
        return cls.model_validate(
            {
                **_columns(lb, cls, exclude={"health_check", "backends"}),
                "health_check": health_check,
                "backends": [BackendOut.model_validate(b) for b in lb.backends],
            }
        )


# ---- whole-fabric views ----------------------------------------------------------


class TopologyOut(BaseModel):
    revision: int
    hosts: list[HostOut]
    tenants: list[TenantOut]
    networks: list[NetworkOut]
    ports: list[PortOut]
    load_balancers: list[LoadBalancerOut]


class RevisionOut(BaseModel):
    revision: int


class HealthOut(BaseModel):
    status: Literal["ok"]
