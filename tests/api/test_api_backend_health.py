"""Backend health as the API shows it: healthy, unhealthy, or unknown with the reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.model import BackendHealthUpdate

pytestmark = pytest.mark.api

SILENT = "the switch of host h2 is not answering"


def create_web(api: Any, net: dict[str, Any], *ips: str) -> dict[str, Any]:
    """A TCP load balancer on port 80 with one backend on port 80 per address."""
    return api.admin.create(
        "/load-balancers",
        {
            "network_id": net["id"],
            "name": "web",
            "vip": "10.0.0.100",
            "protocol": "tcp",
            "port": 80,
            "backends": [{"ip": ip, "port": 80} for ip in ips],
        },
    )


def test_unknown_health_shows_the_reason_and_keeps_the_last_verdict(
    api: Any, net: dict[str, Any]
) -> None:
    lb = create_web(api, net, "10.0.0.10", "10.0.0.11")
    store = api.client.app.state.store

    def record(ip: str, healthy: bool, unknown: str | None = None) -> None:
        now = datetime.now(UTC)
        store.record_backend_health([BackendHealthUpdate(lb["id"], ip, 80, healthy, now, unknown)])

    def shown() -> list[tuple[str, bool, str, str | None]]:
        found = api.admin.get(f"/load-balancers/{lb['id']}").json()["backends"]
        return [(b["ip"], b["healthy"], b["health"], b["health_unknown"]) for b in found]

    assert shown() == [
        ("10.0.0.10", True, "healthy", None),
        ("10.0.0.11", True, "healthy", None),
    ]
    record("10.0.0.10", True, SILENT)
    record("10.0.0.11", False)
    assert shown() == [
        ("10.0.0.10", True, "unknown", SILENT),
        ("10.0.0.11", False, "unhealthy", None),
    ]
    # Replacing the backend list keeps what is known (and not known) of those that stay.
    api.admin.patch(
        f"/load-balancers/{lb['id']}", json={"backends": [{"ip": "10.0.0.10", "port": 80}]}
    )
    assert shown() == [("10.0.0.10", True, "unknown", SILENT)]
    record("10.0.0.10", True)
    assert shown() == [("10.0.0.10", True, "healthy", None)]


def test_a_recorded_verdict_changes_the_stamp_other_replicas_watch(
    api: Any, net: dict[str, Any]
) -> None:
    # Verdicts bump no revision; a controller replica that did not make the verdict
    # must still reload the snapshot, or its switches keep a dead backend in their groups.
    lb = create_web(api, net, "10.0.0.10")
    store = api.client.app.state.store

    def record(healthy: bool, unknown: str | None = None) -> None:
        now = datetime.now(UTC)
        store.record_backend_health(
            [BackendHealthUpdate(lb["id"], "10.0.0.10", 80, healthy, now, unknown)]
        )

    revision = store.current_revision()
    before = store.change_stamp()
    record(True)  # the verdict it already had: nothing to reload
    assert store.change_stamp() == before
    record(False)
    flipped = store.change_stamp()
    assert flipped != before
    assert store.current_revision() == revision
    record(False, SILENT)  # unknown keeps the last verdict, and so do the flows
    assert store.change_stamp() == flipped
    assert store.load_snapshot().load_balancers[0].backends[0].healthy is False
