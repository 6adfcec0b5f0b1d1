"""Several `ovs-fabric serve` processes on one PostgreSQL server: controller
replicas (each its own OpenFlow port and relay sockets) and one API-only
replica that the test's REST client talks to (so killing a controller never
takes the client's API away). Shared by tests/e2e/test_replicas.py and
bench/takeover.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from api.launcher import ServiceProcess
from lab.hosts import SimHost


@dataclass
class Replicas:
    postgres_url: str
    workdir: Path
    admin_token: str = ""
    controllers: dict[str, ServiceProcess] = field(default_factory=dict)
    api: ServiceProcess | None = None

    def _env(self, **extra: str) -> dict[str, str]:
        env = {
            "OVS_FABRIC_DATABASE_URL": self.postgres_url,
            "OVS_FABRIC_RECONCILE_INTERVAL": "2",
            **extra,
        }
        if self.admin_token:
            env["OVS_FABRIC_ADMIN_TOKEN"] = self.admin_token
        return env

    def _started(self, service: ServiceProcess) -> ServiceProcess:
        if not self.admin_token:
            self.admin_token = service.admin_token
        service.admin_token = self.admin_token
        service.start()
        return service

    def start_api(self) -> ServiceProcess:
        self.api = self._started(
            ServiceProcess(self.workdir / "api", extra_env=self._env(OVS_FABRIC_ROLE="api"))
        )
        return self.api

    def start_controller(self, replica_id: str) -> ServiceProcess:
        env = self._env(
            OVS_FABRIC_ROLE="controller",
            OVS_FABRIC_CONTROLLER_REPLICAS="true",
            OVS_FABRIC_REPLICA_ID=replica_id,
        )
        service = self._started(ServiceProcess(self.workdir / replica_id, extra_env=env))
        self.controllers[replica_id] = service
        return service

    def kill(self, replica_id: str) -> None:
        self.controllers.pop(replica_id).kill()

    def stop_all(self) -> None:
        for service in [*self.controllers.values(), self.api]:
            if service is not None:
                service.stop()
        self.controllers.clear()

    def master_of(self, host_id: str) -> str | None:
        """The replica recorded as the switch's last master (switch_masters)."""
        engine = create_engine(self.postgres_url)
        try:
            with engine.connect() as connection:
                row = connection.execute(
                    text("SELECT replica_id FROM switch_masters WHERE host_id = :h"),
                    {"h": host_id},
                ).first()
        finally:
            engine.dispose()
        return None if row is None else str(row[0])


def controller_roles(host: SimHost, bridge: str = "br-int") -> list[tuple[str, str, bool]]:
    """(target, role, is_connected) of each controller of the bridge, as OVS reports them."""
    out = host.vsctl(
        "--format=csv", "--no-headings", "--columns=target,role,is_connected",
        "list", "Controller",
    )  # fmt: skip
    rows = []
    for line in out.splitlines():
        target, role, connected = (part.strip().strip('"') for part in line.split(","))
        rows.append((target, role, connected == "true"))
    return rows


def one_master_all_connected(host: SimHost, replica_ids: list[str]) -> bool:
    """The bridge has a controller per live replica, all connected, exactly one MASTER
    and the others SLAVE or OTHER (EQUAL)."""
    rows = controller_roles(host)
    targets = {t for t, _role, _c in rows}
    wanted = {f"ovs-fabric-ofp-{r}.sock" for r in replica_ids}
    return (
        {t.rsplit("/", 1)[-1] for t in targets} == wanted
        and all(connected for _t, _r, connected in rows)
        and [role for _t, role, _c in rows].count("master") == 1
    )


@contextlib.contextmanager
def running_replicas(postgres_url: str, workdir: Path) -> Iterator[Replicas]:
    replicas = Replicas(postgres_url, workdir)
    try:
        yield replicas
    finally:
        replicas.stop_all()
