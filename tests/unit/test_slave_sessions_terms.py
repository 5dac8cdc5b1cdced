"""The leader's failure detector follows the heartbeat terms it granted: a slave
is declared dead only after the longest lease still in force could have run out."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

import pytest

from claud.master.heartbeat_terms import longest, terms_for
from claud.master.settings import MasterSettings
from claud.master.slave_sessions import SlaveSessions


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CLAUD_")]:
        monkeypatch.delenv(name)


def sessions(slave_ids: list[str]) -> tuple[SlaveSessions, MasterSettings]:
    settings = MasterSettings(id=1, no_discovery=True, max_heartbeats_per_second=10)
    slaves = {s: SimpleNamespace(id=s, runtime_healthy=True) for s in slave_ids}
    replicated: Any = SimpleNamespace(state=SimpleNamespace(slaves=slaves))
    return SlaveSessions(settings, replicated), settings


def test_a_new_leader_gives_every_slave_the_longest_terms_its_tables_allow() -> None:
    ids = [f"s{i}" for i in range(100)]
    slaves, settings = sessions(ids)
    slaves.begin_leadership()
    now = time.monotonic()
    assumed = longest(settings, len(ids))
    assert assumed.dead_after > settings.node_dead_after  # 100 slaves at 10/s: scaled
    assert slaves.overdue("s1", now + assumed.dead_after - 0.5) == (True, False)
    assert slaves.overdue("s1", now + assumed.dead_after + 0.5)[1]


def test_a_shorter_grant_never_pulls_the_dead_deadline_forward() -> None:
    slaves, settings = sessions(["s1"])
    long_terms, short_terms = terms_for(settings, 1000, 1.0), terms_for(settings, 1, 0.0)
    assert long_terms.dead_after > short_terms.dead_after
    t = time.monotonic()
    slaves._granted("s1", t, long_terms, heartbeat=True)
    # The slave may have missed the next reply: it still holds the long lease.
    slaves._granted("s1", t + 1, short_terms, heartbeat=True)
    assert slaves.terms("s1") == short_terms
    assert not slaves.overdue("s1", t + long_terms.dead_after - 0.1)[1]
    assert slaves.overdue("s1", t + long_terms.dead_after + 0.1)[1]


def test_a_watch_answer_renews_from_its_receipt_with_the_terms_last_granted() -> None:
    slaves, settings = sessions(["s1"])
    t = time.monotonic()
    terms = terms_for(settings, 1, 0.0)
    slaves._granted("s1", t, terms, heartbeat=True)
    slaves._granted("s1", t + 5, slaves.terms("s1"), heartbeat=False)
    assert not slaves.overdue("s1", t + terms.dead_after + 1)[1]
    assert slaves.overdue("s1", t + 5 + terms.dead_after)[1]
