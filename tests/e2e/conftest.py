"""End-to-end fixtures: the real service as a child process, driven over REST, on a lab."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.launcher import ServiceProcess
from lab.hosts import Lab
from tests.support.fabric import Fabric, fabric_of, running_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    # A short audit interval so drift in flows is found within seconds in tests.
    with running_service(
        tmp_path / "service", extra_env={"OVS_FABRIC_RECONCILE_INTERVAL": "2"}
    ) as svc:
        yield svc


@pytest.fixture
def fabric(lab: Lab, service: ServiceProcess) -> Iterator[Fabric]:
    with fabric_of(lab, service) as found:
        yield found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    # A failing test shows what the service logged (switch events, flow changes, errors).
    funcargs = getattr(item, "funcargs", {})
    svc = funcargs.get("service")
    if report.failed and report.when == "call" and isinstance(svc, ServiceProcess):
        report.sections.append(("service log", svc.log_tail(200)))
    return report  # type: ignore[return-value]
