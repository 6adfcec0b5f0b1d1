"""Scraping the service's Prometheus text, for tests that check the series move."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.launcher import ServiceProcess
from api.paths import METRICS_PATH

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample at `url`, by name and label set."""
    answer = httpx.get(url, headers=headers or {}, timeout=10)
    answer.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def scrape_service(service: ServiceProcess) -> Samples:
    """`/metrics` on the service's API port, with its admin token."""
    headers = {"Authorization": f"Bearer {service.admin_token}"}
    return scrape(f"{service.base_url}{METRICS_PATH}", headers)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """The sum of `name` over all its label sets."""
    return sum(v for (n, _labels), v in samples.items() if n == name)
