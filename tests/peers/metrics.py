"""Read voipsec's /metrics the way Prometheus does: over TLS, with the bearer token."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get_metrics(port: int, ca: Path, token: str | None) -> tuple[int, bytes]:
    """GET https://127.0.0.1:PORT/metrics trusting ``ca``: (status, body)."""
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape(port: int, ca: Path, token: str) -> Samples:
    """Every sample of /metrics, parsed by prometheus_client; asserts 200."""
    status, body = get_metrics(port, ca, token)
    assert status == 200, body[:500]
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def gauge(port: int, ca: Path, token: str, name: str) -> float:
    """One unlabelled gauge's value."""
    return scrape(port, ca, token)[(name, ())]
