"""Batches of jobs (``POST /v1/jobs:batch``): the wire model names the job at fault,
and the state machine creates every job of a batch or none of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from claud.api import JobBatch, JobSpec, JobState
from claud.api.jobs import MAX_BATCH_IDEMPOTENCY_KEY, MAX_BATCH_JOBS, MAX_IDEMPOTENCY_KEY, batch_job_key
from claud.client import _wire as wire
from claud.client.errors import InvalidSpec
from claud.master import ops
from claud.master.state import StateMachine, join_snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = {"name": "ok", "image": "claud/busybox"}

#: A job spec wrong in one field, and the field.
INVALID_JOBS = st.sampled_from([
    ({"name": "bad name!", "image": "claud/busybox"}, "name"),
    ({"name": "x", "image": "Not An Image"}, "image"),
    ({"name": "x", "image": "claud/busybox", "resources": {"cpu": -1}}, "resources.cpu"),
    ({"name": "x", "image": "claud/busybox", "memroy_mb": 64}, "memroy_mb"),
    ({"name": "x", "image": "claud/busybox", "env": {"1X": "v"}}, "env"),
    ({"name": "x", "image": "claud/busybox", "stop_timeout": 1e400}, "stop_timeout"),
    ({"image": "claud/busybox"}, "name"),
])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))), INVALID_JOBS)
def test_any_invalid_job_is_named_by_its_index_and_field(size_and_index: tuple[int, int], bad: Any) -> None:
    size, index = size_and_index
    spec, field = bad
    jobs: list[dict[str, Any]] = [dict(GOOD) for _ in range(size)]
    jobs[index] = spec
    with pytest.raises(ValidationError) as caught:
        JobBatch.model_validate({"jobs": jobs})
    where = {".".join(map(str, error["loc"])) for error in caught.value.errors()}
    assert where == {f"jobs.{index}.{field}"}
    # The SDK refuses it before any request, naming the same place.
    with pytest.raises(InvalidSpec) as refused:
        wire.submit_batch(jobs, None)
    assert refused.value.field == f"jobs.{index}.{field}"


def test_a_batch_holds_one_to_max_jobs() -> None:
    assert len(JobBatch.model_validate({"jobs": [GOOD] * MAX_BATCH_JOBS}).jobs) == MAX_BATCH_JOBS
    for size in (0, MAX_BATCH_JOBS + 1):
        with pytest.raises(ValidationError):
            JobBatch.model_validate({"jobs": [GOOD] * size})
        with pytest.raises(InvalidSpec):
            wire.submit_batch([GOOD] * size, None)


def test_the_keys_a_batch_gives_its_jobs_are_legal_keys() -> None:
    longest = "k" * MAX_BATCH_IDEMPOTENCY_KEY
    assert len(batch_job_key(longest, MAX_BATCH_JOBS - 1)) == MAX_IDEMPOTENCY_KEY
    JobSpec(**GOOD, idempotency_key=batch_job_key(longest, MAX_BATCH_JOBS - 1))


def test_the_sdk_sends_one_key_per_batch_and_no_job_keys() -> None:
    call = wire.submit_batch([GOOD, {**GOOD, "name": "two"}], None)
    assert call.path == "/v1/jobs:batch"
    assert call.headers is not None and call.headers["Idempotency-Key"]
    assert call.json == {"jobs": [GOOD, {**GOOD, "name": "two"}]}
    assert wire.submit_batch([GOOD], "mine").headers == {"Idempotency-Key": "mine"}
    with pytest.raises(InvalidSpec) as refused:
        wire.submit_batch([GOOD, {**GOOD, "idempotency_key": "k"}], None)
    assert refused.value.field == "jobs.1.idempotency_key"


def _batch(*jobs: tuple[str, JobSpec]) -> ops.SubmitJobs:
    return ops.SubmitJobs(at=T0, jobs=[ops.SubmittedJob(job_id=job_id, spec=spec) for job_id, spec in jobs])


def _spec(name: str, key: str | None = None) -> JobSpec:
    return JobSpec(name=name, image="claud/busybox", idempotency_key=key)


def test_a_batch_creates_every_job_pending_in_order() -> None:
    sm = StateMachine()
    outcome = sm.apply(1, _batch(("a", _spec("a")), ("b", _spec("b")), ("c", _spec("c"))))
    assert outcome.ok and outcome.value == [("a", True), ("b", True), ("c", True)]
    assert [sm.jobs[j].state for j in "abc"] == [JobState.PENDING] * 3
    assert [c.id for c in sm.drain_changes()] == ["a", "b", "c"]
    assert list(sm._pending) == ["a", "b", "c"]


def test_a_refused_job_refuses_the_whole_batch_and_changes_nothing() -> None:
    sm = StateMachine()
    sm.apply(1, ops.SubmitJob(at=T0, job_id="x", spec=_spec("x", key="k")))
    sm.drain_changes()
    before = set(sm.jobs)
    # Job 1 reuses key k with another spec: a conflict naming index 1; job 0 is not made either.
    outcome = sm.apply(2, _batch(("a", _spec("a")), ("b", _spec("other", key="k"))))
    assert not outcome.ok and outcome.code == "conflict" and outcome.value == {"index": 1}
    assert outcome.message.startswith("jobs.1: ")
    # An id that exists, or twice in one batch.
    assert sm.apply(3, _batch(("a", _spec("a")), ("x", _spec("y")))).value == {"index": 1}
    assert sm.apply(4, _batch(("a", _spec("a")), ("a", _spec("b")))).value == {"index": 1}
    assert set(sm.jobs) == before and not sm.drain_changes()
    assert sm.applied_index == 4


def test_a_keyed_batch_retried_creates_nothing_twice() -> None:
    sm = StateMachine()
    specs = [_spec(f"j{i}", key=batch_job_key("K", i)) for i in range(3)]
    first = sm.apply(1, _batch(*((f"a{i}", s) for i, s in enumerate(specs))))
    again = sm.apply(2, _batch(*((f"b{i}", s) for i, s in enumerate(specs))))
    assert first.value == [("a0", True), ("a1", True), ("a2", True)]
    assert again.value == [("a0", False), ("a1", False), ("a2", False)]
    assert set(sm.jobs) == {"a0", "a1", "a2"}
    # One batch naming the same key twice with the same spec makes one job.
    same = sm.apply(3, _batch(("c0", _spec("s", key="same")), ("c1", _spec("s", key="same"))))
    assert same.value == [("c0", True), ("c0", False)]


def test_a_batch_entry_survives_encoding_and_replays_identically() -> None:
    op = _batch(("a", _spec("a")), ("b", _spec("b", key="k/1")))
    assert ops.decode(ops.encode(op)) == op
    one, two = StateMachine(), StateMachine()
    one.apply(1, op)
    two.apply_entry(1, ops.encode(op))
    assert join_snapshot(one.snapshot_parts()) == join_snapshot(two.snapshot_parts())
