"""Job confinement: the host config every job container gets, the slave flags
that change it, and the ``user`` a job may ask for."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from claud.api import Allocation, DesiredState, JobSpec, Resources
from claud.master import ops
from claud.master.state import StateMachine
from claud.slave.__main__ import ConfigError, load_settings
from claud.slave.runtime.hardening import (
    DEFAULT_CAP_DROP,
    DOCKER_DEFAULT_CAPS,
    Hardening,
    host_config_kwargs,
)

BASE = ["--id", "s1", "--masters", "m:1"]


@pytest.fixture(autouse=True)
def secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every slave needs the cluster secret; these tests are about something else."""
    path = tmp_path / "cluster-secret"
    path.write_text("s3cret\n")
    monkeypatch.setenv("CLAUD_CLUSTER_SECRET_FILE", str(path))
    return path


def alloc(**kw: Any) -> Allocation:
    return Allocation(
        alloc_id="j1-1", job_id="j1", attempt=1, desired=DesiredState.RUN, image="claud/busybox:latest",
        resources=Resources(cpu=0.5, memory_mb=64), **kw,
    )


def test_defaults_confine_every_job() -> None:
    settings = load_settings(BASE)
    kwargs = host_config_kwargs(alloc(), settings.hardening)
    assert kwargs["pids_limit"] == 1024
    assert kwargs["log_config"] == {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert set(kwargs["cap_drop"]) == {"NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP"}
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 64 * 1024 * 1024
    assert kwargs["nano_cpus"] == 500_000_000
    assert kwargs["pid_mode"] is None


def test_dropped_capabilities_are_all_in_dockers_default_set() -> None:
    # Dropping one Docker never grants is a typo nobody notices: keep the list honest.
    assert set(DEFAULT_CAP_DROP) <= DOCKER_DEFAULT_CAPS


def test_every_default_is_a_flag_with_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings([
        *BASE, "--job-pids-limit", "0", "--job-log-max-size", "512K", "--job-log-max-files", "1",
        "--job-cap-drop", "cap_net_raw, sys_chroot,NET_RAW", "--job-allow-new-privileges",
    ])
    kwargs = host_config_kwargs(alloc(), s.hardening)
    assert "pids_limit" not in kwargs  # 0: no limit, the engine's default
    assert kwargs["log_config"]["config"] == {"max-size": "512k", "max-file": "1"}
    assert kwargs["cap_drop"] == ["NET_RAW", "SYS_CHROOT"]
    assert kwargs["security_opt"] is None

    monkeypatch.setenv("CLAUD_JOB_CAP_DROP", "")
    monkeypatch.setenv("CLAUD_JOB_PIDS_LIMIT", "64")
    monkeypatch.setenv("CLAUD_JOB_ALLOW_NEW_PRIVILEGES", "false")
    s = load_settings(BASE)
    kwargs = host_config_kwargs(alloc(), s.hardening)
    assert kwargs["cap_drop"] is None and kwargs["pids_limit"] == 64
    assert kwargs["security_opt"] == ["no-new-privileges"]


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--job-cap-drop", "NET_RAW,TELEPORT", "TELEPORT"),
        ("--job-log-max-size", "10 MB", "size"),
        ("--job-log-max-size", "0", "size"),
        ("--job-log-max-files", "0", "job-log-max-files"),
        ("--job-pids-limit", "-1", "job-pids-limit"),
    ],
)
def test_bad_confinement_flags_are_one_line_errors(flag: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings([*BASE, flag, value])
    assert says in str(info.value) and "\n" not in str(info.value)


def test_hardening_refuses_what_the_flags_refuse() -> None:
    for bad in ({"pids_limit": -1}, {"log_max_files": 0}, {"log_max_size": "ten"}, {"cap_drop": ("NOPE",)}):
        with pytest.raises(ValueError):
            Hardening(**bad)


# ------------------------------------------------------------------ user

_PART = re.compile(r"[0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _acceptable(user: str) -> bool:
    parts = user.split(":")
    return 1 <= len(parts) <= 2 and all(
        _PART.fullmatch(p) and (not p.isdigit() or int(p) <= 2**32 - 2) for p in parts
    )


@pytest.mark.parametrize("user", ["0", "1000", "1000:1000", "nobody", "www-data:www-data", "_app:0", "a.b"])
def test_user_accepts_what_docker_resolves(user: str) -> None:
    assert JobSpec(name="j", image="busybox", user=user).user == user
    assert alloc(user=user).user == user


@pytest.mark.parametrize(
    "user",
    ["", ":", "1000:", ":1000", "a:b:c", "-rf", "root\n", "ro ot", "4294967295", "1" * 11,
     "a" * 33, "ü", "0:-1", "$(id)", "a/b"],
)
def test_user_refuses_what_no_image_could_resolve(user: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec(name="j", image="busybox", user=user)
    assert "user" in str(info.value)
    with pytest.raises(ValidationError):
        alloc(user=user)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
       | st.from_regex(r"\A[0-9a-z_.:-]{1,40}\Z"))
def test_user_is_accepted_exactly_by_its_grammar(user: str) -> None:
    try:
        spec = JobSpec(name="j", image="busybox", user=user)
    except ValidationError:
        assert not _acceptable(user)
    else:
        assert _acceptable(user) and spec.user == user
        # Nothing Docker or a shell could read as more than a name or an id.
        assert not re.search(r"[\s/$`'\"\\;&|]", user)


def test_user_travels_from_the_spec_to_the_slaves_allocation() -> None:
    sm = StateMachine()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ops_ = [
        ops.RegisterSlave(at=t0, slave_id="s1", address="s1:1", labels={}, cpu_total=2, memory_mb_total=1024),
        ops.SubmitJob(at=t0, job_id="j1", spec=JobSpec(name="j1", image="claud/busybox", user="1234:5678")),
        ops.SubmitJob(at=t0, job_id="j2", spec=JobSpec(name="j2", image="claud/busybox")),
        ops.ApplyPlan(at=t0, placements=[ops.PlacedJob(job_id=j, slave_id="s1") for j in ("j1", "j2")], unplaced={}),
    ]
    for index, op in enumerate(ops_, 1):
        assert sm.apply(index, op).ok
    users = {a.job_id: a.user for a in sm.desired_allocations("s1")}
    assert users == {"j1": "1234:5678", "j2": None}
