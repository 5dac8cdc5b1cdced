"""Refused requests are logged at most once per client address per period, with a count of the rest."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claud.api.protocol import RAFT_PATH
from claud.daemon.refusal_log import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.claud_fields for r in caplog.records if getattr(r, "claud_event", None) == "auth.refused"]


def test_one_line_per_client_per_period_counting_the_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.refusals")
    clock = Clock()
    refusals = RefusalLog(logging.getLogger("test.refusals"), every=10, clock=clock)
    assert refusals.refused("10.0.0.1", path="/v1/jobs", credential="token")
    for _ in range(99):
        assert not refusals.refused("10.0.0.1", path="/v1/jobs", credential="token")
    assert refusals.refused("10.0.0.2", path="/metrics", credential="token")  # another client: its own line
    clock.now = 10.0
    assert refusals.refused("10.0.0.1", path=RAFT_PATH, credential="cluster_secret")
    assert events(caplog) == [
        {"path": "/v1/jobs", "credential": "token", "client": "10.0.0.1", "suppressed": 0},
        {"path": "/metrics", "credential": "token", "client": "10.0.0.2", "suppressed": 0},
        {"path": RAFT_PATH, "credential": "cluster_secret", "client": "10.0.0.1", "suppressed": 99},
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 5)), max_size=300))
def test_whatever_the_traffic_lines_are_bounded_and_every_refusal_is_counted(
    traffic: list[tuple[int, float]],
) -> None:
    clock = Clock()
    lines: list[tuple[str, float, int]] = []
    logger = logging.getLogger("test.refusals.property")

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fields = record.claud_fields
            lines.append((fields["client"], clock.now, fields["suppressed"]))

    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        refusals = RefusalLog(logger, every=10, clock=clock)
        refusals.MAX_CLIENTS = 8  # small, so that the bound is exercised too
        counts: dict[str, int] = {}
        for client_no, elapsed in traffic:
            clock.now += elapsed
            client = f"10.0.0.{client_no}"
            counts[client] = counts.get(client, 0) + 1
            refusals.refused(client, path="/x", credential="token")
        assert len(refusals._clients) <= refusals.MAX_CLIENTS
        for client in counts:
            times = [at for c, at, _ in lines if c == client]
            # Never two lines for one client within a period...
            assert all(b - a >= 10 for a, b in itertools.pairwise(times))
            # ...and the lines account for no more refusals than there were.
            assert sum(1 + n for c, _, n in lines if c == client) <= counts[client]
    finally:
        logger.removeHandler(handler)
