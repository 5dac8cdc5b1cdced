"""The orphan reaper's rule: a job container runs only while a container running
its slave is up and has been since before the job was created."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claud.daemon import settings_cli
from claud.daemon.settings_cli import ConfigError
from claud.slave.orphans import JobContainer, SlaveContainer, orphans
from claud.slave.settings import OrphanReaperSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(slave: str, created: float, cid: str | None = None) -> JobContainer:
    return JobContainer(cid or f"{slave}-{created}", slave, at(created))


def test_jobs_of_a_running_slave_live_and_those_of_a_stopped_one_die() -> None:
    jobs = [job("s1", 10), job("s2", 10), job("s3", 10)]
    slaves = [SlaveContainer("s1", True, at(0)), SlaveContainer("s2", False, at(0))]
    # s2 is down, s3 has no container at all (removed, or foreign to this project).
    assert [j.slave_id for j in orphans(jobs, slaves)] == ["s2", "s3"]


def test_a_restarted_slave_container_is_a_rebooted_machine() -> None:
    old, new = job("s1", 10), job("s1", 30)
    assert orphans([old, new], [SlaveContainer("s1", True, at(20))]) == [old]


def test_a_job_created_in_the_instant_its_slave_started_lives() -> None:
    assert orphans([job("s1", 5)], [SlaveContainer("s1", True, at(5))]) == []


def test_a_running_container_that_never_started_keeps_nothing_alive() -> None:
    assert orphans([job("s1", 5)], [SlaveContainer("s1", True, None)]) == [job("s1", 5)]


slaves_st = st.lists(
    st.builds(SlaveContainer, st.sampled_from(["s1", "s2", "s3"]), st.booleans(),
              st.none() | st.integers(0, 100).map(at)),
    max_size=6,
)
jobs_st = st.lists(
    st.builds(JobContainer, st.uuids().map(str), st.sampled_from(["s1", "s2", "s3", "s4"]),
              st.integers(0, 100).map(at)),
    max_size=10,
)


@given(jobs_st, slaves_st)
def test_exactly_the_jobs_without_a_live_boot_before_them_are_orphans(jobs, slaves) -> None:
    found = orphans(jobs, slaves)
    assert all(j in jobs for j in found)
    for j in jobs:
        alive = any(s.slave_id == j.slave_id and s.running and s.started_at is not None
                    and s.started_at <= j.created_at for s in slaves)
        assert (j in found) is not alive
    # Another slave's containers never change a job's fate.
    for j in jobs:
        mine = [s for s in slaves if s.slave_id == j.slave_id]
        assert (j in orphans([j], mine)) == (j in found)


def test_reaper_settings_need_a_compose_project_and_check_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(argv: list[str]) -> OrphanReaperSettings:
        return settings_cli.load_settings(OrphanReaperSettings, argv, "claud-orphan-reaper", "")

    monkeypatch.delenv("CLAUD_COMPOSE_PROJECT", raising=False)
    with pytest.raises(ConfigError, match="--compose-project"):
        load([])
    with pytest.raises(ConfigError, match="compose project"):
        load(["--compose-project", "Bad Name"])
    monkeypatch.setenv("CLAUD_COMPOSE_PROJECT", "claudt1234")
    monkeypatch.setenv("CLAUD_REAP_INTERVAL", "0.5")
    s = load([])
    assert (s.compose_project, s.reap_interval) == ("claudt1234", 0.5)
