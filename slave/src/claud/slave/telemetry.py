"""What a slave counts and times, for its ``GET /metrics`` (Prometheus text format):
container starts and failed starts, how long stops take, fences, and the lease left.

The lease left is read when scraped; a slave whose gauge falls towards zero is one
the masters no longer answer, about to fence its jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]  # see claud.master.telemetry

#: Seconds: a stop is the job's grace (--stop-timeout, 10 s by default) at most, plus the engine's own time.
STOP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0)


class LeaseGauge(Collector):
    def __init__(self, lease_left: Callable[[], float], fenced: Callable[[], bool]) -> None:
        self._lease_left, self._fenced = lease_left, fenced

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "claud_slave_lease_seconds_left", "Seconds until this slave fences its jobs unless a master answers.",
            value=max(0.0, self._lease_left()),
        )
        yield GaugeMetricFamily("claud_slave_fenced", "1 while this slave is fenced (its lease ended).",
                                value=int(self._fenced()))


class SlaveTelemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.starts = Counter("claud_slave_container_starts", "Job containers started.", registry=r)
        self.start_failures = Counter(
            "claud_slave_container_start_failures", "Job containers that failed to start (the attempt failed).",
            registry=r,
        )
        self.stop_seconds = Histogram(
            "claud_slave_container_stop_seconds", "From asking a container to stop to its exit, by reason.",
            ["reason"], buckets=STOP_BUCKETS, registry=r,
        )
        self.fences = Counter(
            "claud_slave_fences", "Times this slave fenced its containers (lease ended or engine away).", registry=r
        )

    def watch_lease(self, lease_left: Callable[[], float], fenced: Callable[[], bool]) -> None:
        self.registry.register(LeaseGauge(lease_left, fenced))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["SlaveTelemetry"]
