"""``GET /metrics``: the master's telemetry (:mod:`claud.master.telemetry`) in Prometheus text format."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from claud.master.master import Master

#: Prometheus' text exposition format, the one every scraper reads.
MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(master: Master) -> bytes:
    return master.telemetry.exposition()
