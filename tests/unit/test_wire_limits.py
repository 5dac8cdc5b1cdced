"""The wire models refuse what no replica could apply, naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from claud.api import AllocationStatus, Heartbeat, HostUsage, JobSpec, JobView, WatchRequest
from claud.api.jobs import (
    IDEMPOTENCY_KEY,
    MAX_ARG_BYTES,
    MAX_COMMAND_ARGS,
    MAX_ENV_BYTES,
    MAX_MESSAGE,
    validate_idempotency_key,
)
from claud.master import ops

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE = {"name": "x", "image": "claud/busybox"}


def refused(model, data, *, json_text: str | None = None) -> list[tuple]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json_text) if json_text is not None else model.model_validate(data)
    return [e["loc"] for e in info.value.errors()]


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"env": {"A": "\ud800"}}, ("env",)),
        ({"env": {"\udc00": "v"}}, ("env",)),
        ({"command": ["echo", "a\udfffb"]}, ("command",)),
        ({"constraints": {"labels": {"zone": "\ud800"}}}, ("constraints", "labels")),
        ({"idempotency_key": "\ud800"}, ("idempotency_key",)),
        ({"name": "\ud800"}, ("name",)),
    ],
)
def test_lone_surrogates_from_python_are_refused_naming_the_field(extra, loc) -> None:
    assert refused(JobSpec, {**BASE, **extra}) == [loc]


def test_lone_surrogates_in_json_text_are_invalid_json() -> None:
    with pytest.raises(ValidationError, match=r"surrogate|hex escape"):
        JobSpec.model_validate_json('{"name":"x","image":"claud/busybox","env":{"A":"\\ud800"}}')
    # A proper pair is a character like any other.
    spec = JobSpec.model_validate_json('{"name":"x","image":"claud/busybox","env":{"A":"\\ud83d\\ude00"}}')
    assert spec.env == {"A": "\N{GRINNING FACE}"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_everywhere(number: str) -> None:
    assert refused(JobSpec, None, json_text=f'{{"name":"x","image":"claud/busybox","stop_timeout":{number}}}') == [
        ("stop_timeout",)
    ]
    assert refused(JobSpec, None, json_text=f'{{"name":"x","image":"i","resources":{{"cpu":{number}}}}}') == [
        ("resources", "cpu")
    ]
    hb = f'{{"node_id":"s1","address":"s1:1","cpu_total":{number},"memory_mb_total":1}}'
    assert refused(Heartbeat, None, json_text=hb) == [("cpu_total",)]
    assert refused(HostUsage, None, json_text=f'{{"cpu_percent":{number}}}') == [("cpu_percent",)]
    watch = f'{{"node_id":"s1","known_version":0,"wait_seconds":{number}}}'
    assert refused(WatchRequest, None, json_text=watch) == [("wait_seconds",)]


def test_command_and_env_sizes_are_bounded() -> None:
    assert refused(JobSpec, {**BASE, "command": ["a"] * (MAX_COMMAND_ARGS + 1)}) == [("command",)]
    assert refused(JobSpec, {**BASE, "command": ["a" * (MAX_ARG_BYTES + 1)]}) == [("command",)]
    assert refused(JobSpec, {**BASE, "command": ["a" * MAX_ARG_BYTES] * 5}) == [("command",)]  # 80 KiB in all
    assert JobSpec.model_validate({**BASE, "command": ["a" * MAX_ARG_BYTES] * 3})
    assert refused(JobSpec, {**BASE, "env": {"A": "é" * (MAX_ENV_BYTES // 2)}}) == [("env",)]  # bytes, not chars
    assert refused(JobSpec, {**BASE, "env": {f"V{i}": "" for i in range(1025)}}) == [("env",)]
    assert refused(JobSpec, {**BASE, "env": {"A" * 300: "v"}}) == [("env",)]


def test_labels_follow_kubernetes_sizes() -> None:
    assert JobSpec.model_validate({**BASE, "constraints": {"labels": {"k" * 63: "v" * 63}}})
    assert refused(JobSpec, {**BASE, "constraints": {"labels": {"k" * 64: "v"}}}) == [("constraints", "labels")]
    assert refused(JobSpec, {**BASE, "constraints": {"labels": {"k": "v" * 64}}}) == [("constraints", "labels")]
    assert refused(JobSpec, {**BASE, "constraints": {"labels": {"k": "a\nb"}}}) == [("constraints", "labels")]


def test_patterns_match_whole_strings() -> None:
    assert refused(JobSpec, {**BASE, "name": "x\n"}) == [("name",)]
    assert refused(JobSpec, {**BASE, "image": "busybox\n"}) == [("image",)]
    assert refused(JobSpec, {**BASE, "env": {"A\n": "v"}}) == [("env",)]


@pytest.mark.parametrize("key", ["", "a\nb", "\x00", "tab\there", "\x7f", "\x85", "k" * 201, "\ud800"])
def test_bad_idempotency_keys_are_refused_by_field_header_rule_and_constructor(key: str) -> None:
    assert IDEMPOTENCY_KEY.fullmatch(key) is None
    with pytest.raises(ValueError):
        validate_idempotency_key(key)
    assert refused(JobSpec, {**BASE, "idempotency_key": key}) == [("idempotency_key",)]
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(BASE).with_idempotency_key(key)
    assert [e["loc"] for e in info.value.errors()] == [("idempotency_key",)]


@pytest.mark.parametrize("key", ["k", "retry-42", "k" * 200, "with space", "ünïcødé", "a/b:c=d"])
def test_good_idempotency_keys_pass(key: str) -> None:
    assert validate_idempotency_key(key) == key
    spec = JobSpec.model_validate(BASE).with_idempotency_key(key)
    assert spec.idempotency_key == key and spec.name == "x"
    assert JobSpec.model_validate(BASE).with_idempotency_key(None).idempotency_key is None


def test_slave_reports_are_bounded() -> None:
    status = {"alloc_id": "j1-1", "job_id": "j1", "state": "exited"}
    assert refused(AllocationStatus, {**status, "exit_code": 2**31}) == [("exit_code",)]
    assert refused(AllocationStatus, {**status, "alloc_id": ""}) == [("alloc_id",)]
    assert refused(AllocationStatus, {**status, "job_id": "a b"}) == [("job_id",)]
    long = AllocationStatus.model_validate({**status, "message": "x" * 100_000 + "\ud800"})
    assert len(long.message) == MAX_MESSAGE  # informational text is cut, not refused
    assert AllocationStatus.model_validate({**status, "message": "bad \ud800"}).message == "bad \ufffd"
    hb = {"node_id": "s1", "address": "s1:8701", "cpu_total": 4, "memory_mb_total": 1024}
    assert Heartbeat.model_validate(hb)
    assert Heartbeat.model_validate({**hb, "address": "[::1]:8701"})
    assert refused(Heartbeat, {**hb, "address": "s1"}) == [("address",)]
    assert refused(Heartbeat, {**hb, "node_id": ""}) == [("node_id",)]
    assert refused(Heartbeat, {**hb, "memory_mb_total": 2**70}) == [("memory_mb_total",)]
    assert refused(Heartbeat, {**hb, "cpu_total": -1}) == [("cpu_total",)]
    assert refused(Heartbeat, {**hb, "labels": {"zone": "x" * 64}}) == [("labels",)]
    assert refused(WatchRequest, {"node_id": "s1", "known_version": 2**64}) == [("known_version",)]


def test_encode_refuses_parts_built_without_validation() -> None:
    for update in ({"idempotency_key": ""}, {"env": {"A": "\ud800"}}, {"stop_timeout": float("nan")}):
        spec = JobSpec.model_validate(BASE).model_copy(update=update)
        with pytest.raises(ops.InvalidOperation):
            ops.encode(ops.SubmitJob(at=T0, job_id="a", spec=spec))
    good = ops.encode(ops.SubmitJob(at=T0, job_id="a", spec=JobSpec.model_validate(BASE)))
    assert ops.decode(good).spec.name == "x"


def test_every_limit_is_in_the_openapi_schema_descriptions() -> None:
    schema = json.dumps(JobSpec.model_json_schema())
    for text in ("1024 arguments", "16384 bytes", "65536 bytes", "at most 63 characters", "1-200 characters"):
        assert text in schema, text


def test_job_views_keep_their_field_names() -> None:
    fields = set(JobView.model_fields)
    assert {"name", "image", "command", "env", "resources", "restart", "type", "constraints", "idempotency_key",
            "id", "state", "node_id", "container_id", "attempts", "exit_code", "created_at", "updated_at",
            "pending_reason", "events"} <= fields
