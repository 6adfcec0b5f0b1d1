"""The controller's Prometheus series, updated by its I/O shell (never by controller.core).

The pure core returns flows and plans; the agents and the service that act on
them are where passes are timed and switches counted, so the series live here,
next to them, on prometheus-client's process-wide registry. The API exposes that
registry (`/metrics`), which keeps the arrow one-way: the controller never
imports the API to report anything.

Labels are operator-chosen names (host names, load-balancer ids and backend
addresses), never tenant names; the endpoint that serves them is admin-only.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

SWITCHES_CONNECTED = Gauge(
    "ovs_fabric_switches_connected",
    "Switches (hosts' integration bridges) with an OpenFlow connection to this process.",
)
SWITCH_CONNECTED = Gauge(
    "ovs_fabric_switch_connected",
    "1 while the host's switch is connected over OpenFlow, else 0.",
    ["host"],
)
OVSDB_CONNECTED = Gauge(
    "ovs_fabric_ovsdb_connected",
    "1 while the host's OVSDB answers, else 0.",
    ["host"],
)
FLOWS = Gauge(
    "ovs_fabric_flows",
    "Service flows on the host's switch after the last reconcile pass.",
    ["host"],
)
GROUPS = Gauge(
    "ovs_fabric_groups",
    "Groups on the host's switch after the last reconcile pass.",
    ["host"],
)
RECONCILE_SECONDS = Histogram(
    "ovs_fabric_reconcile_duration_seconds",
    "One reconcile pass on a connected switch: compute flows, read back if due, apply the diff.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_PASSES = Counter(
    "ovs_fabric_reconcile_passes_total",
    "Reconcile passes on a connected switch, by result (ok, failed).",
    ["result"],
)
RECONCILE_DIFF = Histogram(
    "ovs_fabric_reconcile_diff_size",
    "Flows and groups added plus deleted by one reconcile pass (0: nothing to change).",
    buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000),
)
RECONCILE_CHANGES = Counter(
    "ovs_fabric_reconcile_changes_total",
    "Flows and groups sent by reconcile passes, by change (flow_add, flow_delete, ...).",
    ["change"],
)
CONNTRACK_FLUSHES = Counter(
    "ovs_fabric_conntrack_flushes_total",
    "Conntrack flushes of the UDP flows pinned to a load-balancer backend that stopped"
    " being picked (one per backend and switch; repeats included).",
)
BACKEND_HEALTHY = Gauge(
    "ovs_fabric_backend_healthy",
    "Health-check state of a load-balancer backend: 1 healthy, 0 unhealthy, -1 unknown"
    " (the switch that probes it does not answer).",
    ["load_balancer", "backend"],
)


def forget_host(host: str) -> None:
    """Drop a removed host's series (they would otherwise report its last values forever)."""
    for gauge in (SWITCH_CONNECTED, OVSDB_CONNECTED, FLOWS, GROUPS):
        with contextlib.suppress(KeyError):
            gauge.remove(host)
