"""What a master counts and times, for ``GET /metrics`` (Prometheus text format).

Nomad's telemetry is the anchor: how long a write takes to commit and to apply,
how often leadership moves and elections start, each slave's heartbeats and
missed heartbeats, what a scheduler pass costs and places, job transitions by
the state they reach, and every HTTP request's latency by route. The table
gauges (slaves by state, term, commit index) are read from the tables when
scraped; the jobs by state are the state machine's tally (``StateMachine.job_counts``),
which a scrape recounts only for the jobs changed since the last (100,000 jobs
counted afresh took about 45 ms, measured, at every scrape).

Each master has its own registry (tests run several in one process), and the
counters are this process's: they start at zero when it starts, as Prometheus
expects of a counter.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from claud.api import JobState, NodeState

if TYPE_CHECKING:
    from claud.master.state import Change, StateMachine

# A ``_created`` series beside every counter and histogram doubles what is scraped for a
# timestamp nobody graphs (process_start_time says when the counting began).
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Seconds: a commit on loopback takes a millisecond or two, one across a WAN tens,
#: one behind a slow disk or an election up to the propose timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class TableGauges(Collector):
    """The tables as they are when scraped: jobs and slaves by state, term, commit index."""

    def __init__(self, view: Callable[[], tuple[StateMachine, int, int, bool]]) -> None:
        self._view = view

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state, term, commit_index, leader = self._view()
        jobs = state.job_counts()  # kept by the state machine: a scrape costs what changed since the last
        slaves = Tally(
            NodeState.DRAINING if slave.draining and slave.state == NodeState.ALIVE else slave.state
            for slave in state.slaves.values()
        )
        by_job = GaugeMetricFamily("claud_jobs", "Jobs by state.", labels=["state"])
        for job_state in JobState:
            by_job.add_metric([job_state.value], jobs.get(job_state, 0))
        by_slave = GaugeMetricFamily("claud_slaves", "Slaves by state.", labels=["state"])
        for slave_state in NodeState:
            by_slave.add_metric([slave_state.value], slaves.get(slave_state, 0))
        yield by_job
        yield by_slave
        yield GaugeMetricFamily("claud_commit_index", "Index of the last committed log entry.", value=commit_index)
        yield GaugeMetricFamily("claud_term", "Current leadership term.", value=term)
        yield GaugeMetricFamily("claud_is_leader", "1 when this master is the leader.", value=int(leader))
        yield CounterMetricFamily(
            "claud_rejected_entries",
            "Committed log entries this master could not apply (skipped alike on every master).",
            value=state.rejected_entries,
        )


class MasterTelemetry:
    """The master's counters and histograms; the parts that act call its ``observe_*`` methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commit_seconds = Histogram(
            "claud_raft_commit_seconds", "From proposing an entry on the leader to its commit and apply there.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.apply_seconds = Histogram(
            "claud_raft_apply_seconds", "Applying one round of committed entries to the tables.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.applied_entries = Counter("claud_raft_applied_entries", "Log entries applied.", registry=r)
        self.leader_changes = Counter(
            "claud_raft_leader_changes", "Times the leader this master knows changed (to none included).", registry=r
        )
        self.elections = Counter(
            "claud_raft_elections_started", "Pre-votes and elections this master started.", ["kind"], registry=r
        )
        self.heartbeats = Counter(
            "claud_slave_heartbeats", "Heartbeats this master received, by slave.", ["slave"], registry=r
        )
        self.heartbeats_missed = Counter(
            "claud_slave_heartbeats_missed",
            "Times a slave's heartbeats stopped for longer than --suspect-after (committed as suspect).",
            ["slave"], registry=r,
        )
        self.scheduler_seconds = Histogram(
            "claud_scheduler_pass_seconds", "One scheduling pass on the leader, plan and commit.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.placements = Counter("claud_scheduler_placements", "Jobs the scheduler placed.", registry=r)
        self.job_transitions = Counter(
            "claud_job_transitions", "Committed job transitions, by the state reached.", ["state"], registry=r
        )
        self.slave_transitions = Counter(
            "claud_slave_transitions", "Committed slave transitions, by the state reached.", ["state"], registry=r
        )
        self.jobs_lost = Counter(
            "claud_jobs_lost",
            "Jobs marked lost (their slave died or was fenced) and placed again if their policy allows.",
            registry=r,
        )
        self.http_seconds = Histogram(
            "claud_http_request_seconds", "HTTP requests by method, route template and status class.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.leader_seen: int | None = None
        self.role_seen: str | None = None

    def watch_tables(self, view: Callable[[], tuple[StateMachine, int, int, bool]]) -> None:
        self.registry.register(TableGauges(view))

    # --- what the master's parts report ------------------------------------------------------

    def observe_role(self, role: str, leader_id: int | None) -> None:
        """After a role or leader change: an election started, the leader moved."""
        if role != self.role_seen and role in ("pre_candidate", "candidate"):
            self.elections.labels("pre_vote" if role == "pre_candidate" else "election").inc()
        if leader_id != self.leader_seen:
            self.leader_changes.inc()
        self.role_seen, self.leader_seen = role, leader_id

    def observe_applied(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.kind == "job":
                self.job_transitions.labels(change.state).inc()
                if change.state == JobState.LOST.value:
                    self.jobs_lost.inc()
            else:
                self.slave_transitions.labels(change.state).inc()
                if change.state == NodeState.SUSPECT.value:
                    self.heartbeats_missed.labels(change.id).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def status_class(status: int) -> str:
    """``2xx``, ``4xx``...: a label with five values, not one per status."""
    return f"{status // 100}xx"


class RequestTiming:
    """Times every HTTP request (refusals included: it wraps the auth middleware)
    into ``claud_http_request_seconds`` by method, route template and status class.

    The route is the template FastAPI matched (``/v1/jobs/{job_id}``), or a path
    one of the fast paths answered before routing (``known``); anything else is
    ``unmatched``, so a client sending random paths cannot grow the label set."""

    def __init__(self, app: ASGIApp, telemetry: MasterTelemetry, known: frozenset[str]) -> None:
        self.app, self.telemetry, self.known = app, telemetry, known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None)
            if path is None:
                path = scope["path"] if scope["path"] in self.known else "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.telemetry.http_seconds.labels(method, path, status_class(status)).observe(
                time.perf_counter() - started
            )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

__all__ = ["LATENCY_BUCKETS", "MasterTelemetry", "RequestTiming", "status_class"]
