"""Connectivity diagnosis, pure: why A cannot reach B (`verdict`), from the intended state
and what the switches report (`observed`). The I/O that reads the switches is
`controller.inspect`; the API's `POST /api/v1/diagnose` puts them together."""

from controller.core.diagnosis.observed import HostObservation, TraceResult
from controller.core.diagnosis.verdict import (
    CAUSES,
    Cause,
    Endpoint,
    Expectations,
    Finding,
    Hop,
    PathPlan,
    Verdict,
    diagnose,
    plan_path,
)

__all__ = [
    "CAUSES",
    "Cause",
    "Endpoint",
    "Expectations",
    "Finding",
    "Hop",
    "HostObservation",
    "PathPlan",
    "TraceResult",
    "Verdict",
    "diagnose",
    "plan_path",
]
