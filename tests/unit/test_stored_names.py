"""The word changed in code (node -> slave), never on the wire or on disk.

Entries already in a log, snapshots on disk and the slaves of the earlier
version spell a slave's id ``node_id``; these must read, and be written, the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from claud.api import Heartbeat, JobState, WatchRequest
from claud.master import ops
from claud.master.state import JobRecord, StateMachine

#: Entries as a master before the rename wrote them (its ``ops.encode``), byte for byte.
OLD_ENTRIES = [
    '{"at":"2026-12-01T00:00:00Z","kind":"register_node","node_id":"s1","address":"127.0.0.1:1","labels":{},'
    '"cpu_total":4.0,"memory_mb_total":4096}',
    '{"at":"2026-12-01T00:00:00Z","kind":"submit_job","job_id":"j1","spec":{"name":"j","image":"busybox",'
    '"command":["true"],"env":{},"resources":{"cpu":0.1,"memory_mb":16},"restart":{"policy":"never",'
    '"max_retries":0},"type":"batch","constraints":{"labels":{}},"stop_timeout":5.0,"user":null,'
    '"idempotency_key":null}}',
    '{"at":"2026-12-01T00:00:00Z","kind":"apply_plan","placements":[{"job_id":"j1","node_id":"s1"}],"unplaced":{}}',
]


def test_entries_an_earlier_master_wrote_still_apply() -> None:
    sm = StateMachine()
    for index, entry in enumerate(OLD_ENTRIES, start=1):
        assert sm.apply_entry(index, entry).ok, entry
    assert sm.rejected_entries == 0
    assert sm.jobs["j1"].slave_id == "s1" and sm.jobs["j1"].state == JobState.SCHEDULED
    assert [job.id for job in sm.placed_jobs("s1")] == ["j1"]


def test_new_entries_keep_the_stored_name() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    for op in (
        ops.SetDrain(at=at, slave_id="s1", draining=True),
        ops.ApplyPlan(at=at, placements=[ops.PlacedJob(job_id="j1", slave_id="s1")]),
    ):
        text = ops.encode(op)
        assert '"node_id":"s1"' in text and "slave_id" not in text
        assert ops.decode(text) == op


def test_snapshots_keep_the_stored_name_both_ways() -> None:
    sm = StateMachine()
    for index, entry in enumerate(OLD_ENTRIES, start=1):
        sm.apply_entry(index, entry)
    snapshot = sm.to_snapshot()
    [job] = json.loads(snapshot)["jobs"]
    assert job["node_id"] == "s1" and "slave_id" not in job
    assert StateMachine.from_snapshot(snapshot).jobs["j1"].slave_id == "s1"
    assert JobRecord.model_validate(job).slave_id == "s1"


def test_the_slave_protocol_keeps_the_stored_name() -> None:
    hb = Heartbeat(slave_id="s1", address="127.0.0.1:1", cpu_total=1, memory_mb_total=1)
    assert hb.model_dump(mode="json")["node_id"] == "s1"
    assert Heartbeat.model_validate_json(hb.model_dump_json()) == hb
    assert WatchRequest.model_validate({"node_id": "s1", "known_version": 0}).slave_id == "s1"


def test_the_entries_an_earlier_master_wrote_are_what_this_one_writes() -> None:
    assert [ops.encode(ops.decode(entry)) for entry in OLD_ENTRIES] == OLD_ENTRIES
