"""/metrics: every Prometheus series of this process (API, store, controller), admin only.

Series name hosts and load balancers, so the API port serves them only for an
admin token (Prometheus: `authorization: {credentials_file: ...}`). A scraper
without a token uses the exporter listener instead (`OVS_FABRIC_METRICS_PORT`,
loopback by default), as OVN's and OpenStack's exporters are scraped.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.paths import METRICS_PATH
from api.rest.auth import require_admin

router = APIRouter(tags=["metrics"])


# Not part of the REST API's document (like /ui): a scraper's endpoint, in the README.
@router.get(
    METRICS_PATH,
    dependencies=[Depends(require_admin)],
    response_class=Response,
    include_in_schema=False,
)
def metrics() -> Response:
    """Prometheus text exposition of this process's series (admin token)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
