"""Group commit's rule, over arbitrary logs: a ``submit_group`` entry is its submits, one entry each.

``StateMachine._apply_submit_group`` judges each submit of a group as if it
were an entry of its own, in order. The examples in test_group_commit.py show
that for chosen cases; this state machine checks it over arbitrary sequences of
groups (specs from a small pool, so idempotency keys collide with the same and
with other specs; job ids from a small pool, so they repeat within and across
groups), mixed with single submits, ``submit_jobs`` batches, stops and GC
passes (which free ids and keys), and with submits whose apply raises.

Three replicas see the same log: the *leader* applies each entry's operation
as the leader does (a group made by ``ops.group_submits``, never validated
again), the *follower* decodes the entry's bytes (``apply_entry``) and is
restored from its own snapshot now and then, and the *model* applies every
submit of a group as an entry of its own. After every step: the leader and the
follower hold the same snapshot; the leader and the model the same tables,
indexes and events, and gave the same outcome per submit; a refused submit
(or batch) changed nothing; and the leader's snapshot restores to the same
tables and indexes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from claud.api import JobSpec
from claud.master import ops
from claud.master.state import Outcome, StateMachine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = datetime(2100, 1, 1, tzinfo=UTC)

#: Raises before its apply changes anything (a bug a submit meets alike on every replica).
POISON = "p" * 12
#: Applies, then raises: a bug that changed a row before it failed.
POISON_LATE = "q" * 12
JOB_IDS = ["a" * 12, "b" * 12, "c" * 12, "d" * 12, "e" * 12, POISON, POISON_LATE]
#: A job id: one of the five plain ids, or a poisoned one about one submit in eleven.
JOB_ID = st.sampled_from(JOB_IDS[:5] * 4 + [POISON, POISON_LATE])

#: Small, so that keys meet again: k1 with three specs (two alike in name and key, unlike in
#: an env: a conflict is the whole spec's, not the name's), k2 with two, k3 with one, and no key.
SPECS = [
    *(JobSpec(name=name, image="claud/busybox", idempotency_key=key)
      for name in ("x", "y") for key in (None, "k1", "k2")),
    JobSpec(name="x", image="claud/busybox", idempotency_key="k1", env={"A": "1"}),
    JobSpec(name="z", image="claud/busybox", idempotency_key="k3"),
]

#: One submit: its job id, its spec (by position in SPECS), its ``at`` (seconds after T0).
SUBMIT = st.tuples(JOB_ID, st.integers(0, len(SPECS) - 1), st.integers(0, 3600))
Submit = tuple[str, int, int]


def _op(submit: Submit) -> ops.SubmitJob:
    job_id, spec, seconds = submit
    return ops.SubmitJob(at=T0 + timedelta(seconds=seconds), job_id=job_id, spec=SPECS[spec])


def _poisoned(sm: StateMachine) -> StateMachine:
    """``sm`` with a buggy ``_apply_submit_job`` for the poisoned ids (on this instance only,
    so the group's handler and the single entry's both meet it, and no other test does)."""
    real: Callable[[ops.SubmitJob], Outcome] = sm._apply_submit_job

    def flaky(op: ops.SubmitJob) -> Outcome:
        if op.job_id == POISON:
            raise RuntimeError("a bug, before any change")
        outcome = real(op)
        if op.job_id == POISON_LATE:
            raise RuntimeError("a bug, after a change")
        return outcome

    sm._apply_submit_job = flaky  # type: ignore[method-assign]
    return sm


def _verdict(outcome: Outcome) -> tuple[bool, Any, str, str]:
    """An outcome as the client sees it, but for the entry's index in a rejection's message
    (a group's submits share their entry's index, a submit of its own has one)."""
    return outcome.ok, outcome.value, outcome.code, re.sub(r"^entry \d+ ", "entry ? ", outcome.message)


def _tables(sm: StateMachine) -> dict[str, Any]:
    """The snapshot's tables, all but the applied index (the model has more entries)."""
    tables: dict[str, Any] = json.loads(sm.to_snapshot())
    del tables["applied_index"]
    return tables


def _indexes(sm: StateMachine) -> tuple[Any, ...]:
    """The indexes derived from the rows (in order where their order matters)."""
    return (list(sm._pending), list(sm._unexplained), sm._backoff, sm._by_idempotency_key,
            {slave: dict(placed.jobs) for slave, placed in sm._placed_by_slave.items()}, sm._ports_by_slave)


def _state(sm: StateMachine) -> tuple[Any, ...]:
    return _tables(sm), _indexes(sm)


def _changes(sm: StateMachine) -> list[dict[str, Any]]:
    """The transitions since the last call, but for their entry's index."""
    return [{**change.as_dict(), "index": None} for change in sm.drain_changes()]


class GroupedAndOneByOne(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.leader = _poisoned(StateMachine())
        self.follower = _poisoned(StateMachine())
        self.model = _poisoned(StateMachine())
        self.index = 0  # the leader's and the follower's log
        self.model_index = 0  # the model's: one entry per submit

    # ------------------------------------------------------------ helpers

    def _append(self, entry: ops.Encoded) -> Outcome:
        """One entry on the leader (its operation) and the follower (its bytes): the same outcome."""
        self.index += 1
        outcome = self.leader.apply(self.index, entry.op)
        assert self.follower.apply_entry(self.index, entry.data) == outcome
        return outcome

    def _model_apply(self, op: ops.Operation) -> Outcome:
        """One entry on the model; a refusal leaves it as it was (a rejection that changed a row
        before it failed, the late poison, excepted)."""
        before = _state(self.model)
        self.model_index += 1
        outcome = self.model.apply(self.model_index, op)
        late = isinstance(op, ops.SubmitJob) and op.job_id == POISON_LATE
        if not outcome.ok and not late:
            assert _state(self.model) == before, outcome
        if outcome.ok and isinstance(op, ops.SubmitJob) and outcome.value[1] is False:
            assert _state(self.model) == before, "an idempotent repeat changed the tables"
        return outcome

    # --------------------------------------------------------------- rules

    @rule(submits=st.lists(SUBMIT, min_size=1, max_size=8))
    def group(self, submits: list[Submit]) -> None:
        parts = [ops.encode_checked(_op(submit)) for submit in submits]
        entry = ops.group_submits(parts)
        assert ops.decode(entry.data) == entry.op
        rows_before = {job_id: job.encoded() for job_id, job in self.leader.jobs.items()}
        outcome = self._append(entry)
        assert outcome.ok, outcome  # the group stands; its submits are judged one by one
        singles = [self._model_apply(part.op) for part in parts]
        assert [_verdict(o) for o in outcome.value] == [_verdict(o) for o in singles]
        # A group only adds jobs, exactly those its submits say they made; the rows that
        # were there are untouched (refused and repeated submits changed nothing).
        made = {o.value[0] for o in outcome.value if o.ok and o.value[1]}
        late = {POISON_LATE} if any(s[0] == POISON_LATE for s in submits) else set()
        added = set(self.leader.jobs) - set(rows_before)
        assert made <= added <= made | late
        assert {job_id: self.leader.jobs[job_id].encoded() for job_id in rows_before} == rows_before

    @rule(submit=SUBMIT)
    def single(self, submit: Submit) -> None:
        op = _op(submit)
        outcome = self._append(ops.encode_checked(op))
        assert _verdict(outcome) == _verdict(self._model_apply(op))

    @rule(submits=st.lists(SUBMIT, min_size=1, max_size=4), seconds=st.integers(0, 3600))
    def batch(self, submits: list[Submit], seconds: int) -> None:
        jobs = [ops.SubmittedJob(job_id=job_id, spec=SPECS[spec]) for job_id, spec, _ in submits]
        op = ops.SubmitJobs(at=T0 + timedelta(seconds=seconds), jobs=jobs)
        before = _state(self.leader)
        outcome = self._append(ops.encode_checked(op))
        if not outcome.ok:  # all or nothing
            assert _state(self.leader) == before, outcome
        assert outcome == self._model_apply(op)

    @rule(job_id=st.sampled_from(JOB_IDS), seconds=st.integers(0, 3600))
    def stop(self, job_id: str, seconds: int) -> None:
        op = ops.StopJob(at=T0 + timedelta(seconds=seconds), job_id=job_id)
        assert self._append(ops.encode_checked(op)) == self._model_apply(op)

    @rule(job_ids=st.lists(st.sampled_from(JOB_IDS), max_size=4), keep=st.integers(0, 2))
    def collect(self, job_ids: list[str], keep: int) -> None:
        """A GC pass: a removed job frees its id and its idempotency key."""
        op = ops.CollectGarbage(at=LATER, job_ids=job_ids, jobs_finished_before=LATER, keep_jobs=keep,
                                slaves_dead_before=LATER)
        assert self._append(ops.encode_checked(op)) == self._model_apply(op)

    @precondition(lambda self: self.index > 0)
    @rule()
    def restore_follower(self) -> None:
        """The follower installs its own snapshot, as a lagging replica would (the replication
        loop carries the process-local rejection count over)."""
        snapshot = self.follower.to_snapshot()
        restored = _poisoned(StateMachine.from_snapshot(snapshot))
        restored.rejected_entries = self.follower.rejected_entries
        assert restored.to_snapshot() == snapshot
        self.follower = restored

    # --------------------------------------------------------- invariants

    @invariant()
    def leader_and_follower_agree(self) -> None:
        assert self.follower.to_snapshot() == self.leader.to_snapshot()
        assert _indexes(self.follower) == _indexes(self.leader)
        assert self.follower.rejected_entries == self.leader.rejected_entries

    @invariant()
    def grouped_is_one_by_one(self) -> None:
        assert _tables(self.leader) == _tables(self.model)
        assert _indexes(self.leader) == _indexes(self.model)
        assert self.leader.rejected_entries == self.model.rejected_entries
        assert self.leader.capacity_epoch == self.model.capacity_epoch  # one rebuild per raising submit
        leader = _changes(self.leader)
        assert leader == _changes(self.model)
        self.follower.drain_changes()

    @invariant()
    def snapshot_round_trips(self) -> None:
        snapshot = self.leader.to_snapshot()
        restored = StateMachine.from_snapshot(snapshot)
        assert restored.to_snapshot() == snapshot
        assert _indexes(restored) == _indexes(self.leader)
        assert restored.applied_index == self.leader.applied_index == self.index


GroupedAndOneByOne.TestCase.settings = settings(
    max_examples=120, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestGroupedAndOneByOne = GroupedAndOneByOne.TestCase
