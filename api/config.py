"""Service settings: one typed object, read from ``OVS_FABRIC_*`` environment variables."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.store.segments import (
    VLAN_MAX,
    VLAN_MIN,
    VNI_MAX,
    VNI_MIN,
    SegmentPool,
    SegmentPools,
    parse_ranges,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OVS_FABRIC_", populate_by_name=True, extra="ignore"
    )

    database_url: str = Field(
        default="sqlite:///./var/ovs-fabric.db",
        validation_alias=AliasChoices("OVS_FABRIC_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    # Admin bearer token. When unset and none exists in the database, one is
    # generated on first start and printed once; only its hash is stored.
    admin_token: str | None = None

    vlan_ranges: str = f"{VLAN_MIN}-{VLAN_MAX}"
    vlan_reserved: str = ""
    vni_ranges: str = f"{VNI_MIN}-{VNI_MAX}"
    vni_reserved: str = ""
    # MTU of the hosts' underlay (VXLAN) and VLAN trunk links: a new network's default
    # MTU is this minus 50 (VXLAN over IPv4) for VXLAN, and min(1500, this) for VLAN.
    underlay_mtu: int = Field(default=1500, ge=1280, le=65535)

    integration_bridge: str = "br-int"
    datapath_type: str = "system"
    openflow_port: int = Field(default=6653, ge=1, le=65535)
    openflow_listen_host: str = "127.0.0.1"
    # Controller target given to hosts reached over tcp:/ssl: OVSDB, e.g. "tcp:192.0.2.1:6653".
    openflow_advertise: str | None = None
    # Mutual TLS (`ovs-fabric pki`): our key and certificate, and the CA whose
    # certificates we accept. With all three, `ssl:` OVSDB remotes work and switches
    # reached over the network connect with TLS to openflow_tls_listen_host:openflow_tls_port.
    tls_private_key: Path | None = None
    tls_certificate: Path | None = None
    tls_ca_certificate: Path | None = None
    openflow_tls_listen_host: str = "127.0.0.1"
    openflow_tls_port: int = Field(default=6654, ge=1, le=65535)
    # No plaintext across a network: hosts with a tcp: OVSDB remote are reported and
    # not managed, and the plaintext OpenFlow listener (which then only serves hosts
    # on this machine, through their unix: run directory) must be on loopback.
    require_tls: bool = False
    controller_enabled: bool = True
    libvirt_enabled: bool = True
    reconcile_interval: float = Field(default=10.0, gt=0)
    # Seconds a tombstone of a deleted row is kept for incremental readers (controller
    # replicas); a reader further behind reads everything (api.store.tombstones).
    tombstone_retention: float = Field(default=3600.0, gt=0)
    # Several processes on one PostgreSQL database: "api" serves only the REST API,
    # "controller" and "both" run the controller too. With controller_replicas the
    # controller shares the switches with the other live replicas (one OpenFlow
    # MASTER per switch, chosen through PostgreSQL advisory locks); without it this
    # process masters every switch, as the only controller must.
    role: Literal["api", "controller", "both"] = "both"
    controller_replicas: bool = False
    replica_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    mastership_poll_interval: float = Field(default=0.15, gt=0)
    mastership_grace: float = Field(default=0.5, ge=0)
    # Concurrent `GET /ports/{id}?wait=active` long-polls one token may hold open;
    # beyond it a wait is answered 429 with Retry-After.
    max_waiters_per_token: int = Field(default=32, ge=1)
    # Observability. `text`: classic lines; `json`: one object per line with the ids
    # involved (request id, host, port, network). Metrics are always at /metrics for
    # an admin token; metrics_port adds a token-less exporter listener on metrics_host,
    # the way OVN's and OpenStack's Prometheus exporters are scraped.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("vlan_ranges", "vlan_reserved")
    @classmethod
    def _vlan_ranges_parse(cls, value: str) -> str:
        parse_ranges(value, lowest=VLAN_MIN, highest=VLAN_MAX)
        return value

    @field_validator("vni_ranges", "vni_reserved")
    @classmethod
    def _vni_ranges_parse(cls, value: str) -> str:
        parse_ranges(value, lowest=VNI_MIN, highest=VNI_MAX)
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> Self:
        files = {
            "tls_private_key": self.tls_private_key,
            "tls_certificate": self.tls_certificate,
            "tls_ca_certificate": self.tls_ca_certificate,
        }
        given = [name for name, path in files.items() if path is not None]
        if given and len(given) != len(files):
            missing = ", ".join(name for name in files if name not in given)
            raise ValueError(f"TLS needs all three files; missing {missing}")
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        if self.tls_private_key and self.tls_certificate and self.tls_ca_certificate:
            # Loaded as the listener will load them: a key that does not match its
            # certificate fails here, in one line, not at the first connection.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(self.tls_certificate, self.tls_private_key)
                context.load_verify_locations(self.tls_ca_certificate)
            except ssl.SSLError as exc:
                raise ValueError(f"TLS files do not load: {exc.reason or exc}") from None
        if self.require_tls:
            if not given:
                raise ValueError(
                    "require_tls needs tls_private_key, tls_certificate and tls_ca_certificate"
                )
            if not _is_loopback(self.openflow_listen_host):
                raise ValueError(
                    "require_tls: the plaintext openflow_listen_host must be a loopback "
                    f"address, not {self.openflow_listen_host!r}"
                )
        return self

    @model_validator(mode="after")
    def _replicas_on_postgres(self) -> Self:
        if self.database_url.startswith("sqlite") and (
            self.controller_replicas or self.role != "both"
        ):
            raise ValueError(
                "controller replicas need PostgreSQL: on SQLite the service runs as one"
                " process (role both, controller_replicas off)"
            )
        return self

    @model_validator(mode="after")
    def _pools_not_empty(self) -> Self:
        if self.vlan_pool().size == 0:
            raise ValueError("vlan_ranges minus vlan_reserved leaves no VLAN id")
        if self.vni_pool().size == 0:
            raise ValueError("vni_ranges minus vni_reserved leaves no VNI")
        return self

    def vlan_pool(self) -> SegmentPool:
        return SegmentPool.from_config(
            self.vlan_ranges, self.vlan_reserved, lowest=VLAN_MIN, highest=VLAN_MAX
        )

    def vni_pool(self) -> SegmentPool:
        return SegmentPool.from_config(
            self.vni_ranges, self.vni_reserved, lowest=VNI_MIN, highest=VNI_MAX
        )

    def segment_pools(self) -> SegmentPools:
        return SegmentPools(vlan=self.vlan_pool(), vxlan=self.vni_pool())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
