"""Whole-fabric endpoints: topology, revision, health."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from api.errors import ProblemError
from api.paths import HEALTH_PATH
from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep
from api.rest.responses import API_PROBLEMS, problem_responses
from api.rest.schemas import (
    HealthOut,
    HostOut,
    LoadBalancerOut,
    NetworkOut,
    PortOut,
    RevisionOut,
    TenantOut,
    TopologyOut,
)
from api.store import resources
from api.store.db import read_revision

router = APIRouter(tags=["fabric"], responses=API_PROBLEMS)
health_router = APIRouter(tags=["health"], responses=problem_responses(503))


class Unavailable(ProblemError):
    status = 503


@router.get("/topology")
def get_topology(caller: CallerDep, db: DatabaseDep) -> TopologyOut:
    """Everything the caller may see, in one consistent read."""
    with db.read() as session:
        revision = read_revision(session)
        found = resources.topology(session, actor=caller)
        return TopologyOut(
            revision=revision,
            hosts=[HostOut.of(h) for h in found.hosts],
            tenants=[TenantOut.of(t) for t in found.tenants],
            networks=[NetworkOut.of(n) for n in found.networks],
            ports=[PortOut.of(p) for p in found.ports],
            load_balancers=[LoadBalancerOut.of(lb) for lb in found.load_balancers],
        )


@router.get("/revision")
def get_revision(_caller: CallerDep, db: DatabaseDep) -> RevisionOut:
    """The global revision: it grows with every change of desired state."""
    return RevisionOut(revision=db.current_revision())


@health_router.get(HEALTH_PATH)
def healthz(db: DatabaseDep) -> HealthOut:
    """Liveness and database reachability; needs no token."""
    try:
        db.current_revision()
    except SQLAlchemyError as exc:
        raise Unavailable(f"database unreachable: {type(exc).__name__}") from None
    return HealthOut(status="ok")
