"""A small typed client of the REST API, as an orchestration tool would use it.

Used by the lab command and the end-to-end tests, so both drive the service
exactly the way a user does: over HTTP, with a bearer token.
"""

from __future__ import annotations

from typing import Any

import httpx

from api.paths import API_PREFIX

PAGE_LIMIT = 1000  # the API's largest page


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class FabricClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + API_PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FabricClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- generic -----------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def create(self, resource: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/{resource}", json=body)
        return result

    def get(self, resource: str, obj_id: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/{resource}/{obj_id}", params=params)
        return result

    def update(self, resource: str, obj_id: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PATCH", f"/{resource}/{obj_id}", json=body)
        return result

    def delete(self, resource: str, obj_id: str) -> None:
        self.request("DELETE", f"/{resource}/{obj_id}")

    def list_all(self, resource: str, **params: Any) -> list[dict[str, Any]]:
        """Every item, page after page (a list answers at most PAGE_LIMIT per request)."""
        items: list[dict[str, Any]] = []
        while True:
            page: dict[str, Any] = self.request(
                "GET", f"/{resource}", params={**params, "limit": PAGE_LIMIT, "offset": len(items)}
            )
            items.extend(page["items"])
            if not page["items"] or len(items) >= page["total"]:
                return items

    def topology(self) -> dict[str, Any]:
        """Everything the token may see, in one consistent read."""
        result: dict[str, Any] = self.request("GET", "/topology")
        return result

    def list(self, resource: str, **params: Any) -> list[dict[str, Any]]:
        page: dict[str, Any] = self.request("GET", f"/{resource}", params=params)
        items: list[dict[str, Any]] = page["items"]
        return items

    # ---- intents -----------------------------------------------------------------------

    def wait_port_active(self, port_id: str, *, timeout: float = 20.0) -> dict[str, Any]:
        """The port as the API reports it once ACTIVE, or after `timeout` whatever it is."""
        port = self.get("ports", port_id, wait="active", timeout=timeout)
        return port
