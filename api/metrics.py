"""The service's own Prometheus series (the controller's are in `controller.metrics`).

One process-wide registry (prometheus-client's default) holds both; `/metrics`
and the optional exporter listener serve it (api/rest/routes/metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

HTTP_REQUEST_SECONDS = Histogram(
    "ovs_fabric_http_request_duration_seconds",
    "REST API requests by route template, method and status code.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PORT_ACTIVATION_SECONDS = Histogram(
    "ovs_fabric_port_activation_seconds",
    "From a port's binding to its flows confirmed on the switch (DOWN -> ACTIVE), as the"
    " API reports it in activation_seconds.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
LIBVIRT_EVENTS = Counter(
    "ovs_fabric_libvirt_events_total",
    "libvirt domain lifecycle events received, by type (STARTED, STOPPED, ...).",
    ["type"],
)
DATABASE_ERRORS = Counter(
    "ovs_fabric_database_errors_total",
    "Errors raised by the database driver (connection lost, lock timeout, constraint...),"
    " by exception class.",
    ["error"],
)


def start_exporter(host: str, port: int) -> Callable[[], None]:
    """The token-less exporter listener (`metrics_host`:`metrics_port`); returns its stopper."""
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
