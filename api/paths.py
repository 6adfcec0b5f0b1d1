"""Where the service's routes live; a leaf module the REST client and the launcher share.

NOTE: nothing is imported here, so the lab (which may reach only `api.client` and
`api.launcher`) can use it without pulling in the service.
"""

API_PREFIX = "/api/v1"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
UI_PATH = "/ui"
