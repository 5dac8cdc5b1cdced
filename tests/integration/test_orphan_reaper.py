"""claud-orphan-reaper on the real engine: a slave's container goes, its jobs go with it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from claud.slave.orphans import LABEL_PROJECT, LABEL_RUNS_SLAVE, Reaper

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"


@pytest.fixture
def project(slave_ids: Any) -> str:
    return f"claudt{slave_ids.token[:10]}"


def start(docker: Any, ids: Any, project: str, name: str, labels: dict[str, str]) -> Any:
    return docker.containers.run(
        IMAGE, ["sleep", "600"], name=f"claudt-{ids.token[:10]}-{name}", detach=True, init=True,
        labels={"claud.test": ids.token, LABEL_PROJECT: project, **labels},
    )


def running(container: Any) -> bool:
    container.reload()
    return bool(container.attrs["State"]["Running"])


@pytest.fixture
def reaper(project: str) -> Iterator[Reaper]:
    r = Reaper(project, api_timeout=10, interval=30)  # a long interval: only events can be quick
    yield r
    r.stop()


def test_a_pass_kills_exactly_the_jobs_whose_slave_container_is_down_or_restarted(
    slave_docker: Any, slave_ids: Any, project: str, reaper: Reaper
) -> None:
    s1 = start(slave_docker, slave_ids, project, "slave1", {LABEL_RUNS_SLAVE: "s1"})
    s2 = start(slave_docker, slave_ids, project, "slave2", {LABEL_RUNS_SLAVE: "s2"})
    job1 = start(slave_docker, slave_ids, project, "job1", {"claud.slave": "s1"})
    job2 = start(slave_docker, slave_ids, project, "job2", {"claud.slave": "s2"})
    # Another project's job of a slave with the same id is none of this reaper's business.
    foreign = start(slave_docker, slave_ids, project + "x", "foreign", {"claud.slave": "s2"})

    assert reaper.reap_once() == 0
    assert all(map(running, (job1, job2, foreign)))

    s2.kill()
    assert reaper.reap_once() == 1
    assert running(job1) and not running(job2) and running(foreign)

    s1.restart(timeout=0)  # a machine that reboots: what ran before does not survive it
    assert reaper.reap_once() == 1
    assert not running(job1) and running(foreign)
    after = start(slave_docker, slave_ids, project, "job3", {"claud.slave": "s1"})
    assert reaper.reap_once() == 0 and running(after)


def test_the_loop_reacts_to_the_kill_of_a_slave_container_at_once(
    slave_docker: Any, slave_ids: Any, project: str, reaper: Reaper, slave_wait_for: Any
) -> None:
    machine = start(slave_docker, slave_ids, project, "slave1", {LABEL_RUNS_SLAVE: "s1"})
    job = start(slave_docker, slave_ids, project, "job", {"claud.slave": "s1"})
    loop = threading.Thread(target=reaper.run, daemon=True)
    loop.start()
    try:
        slave_wait_for(lambda: running(job), 10, "the job to run")
        machine.kill()
        # The interval is 30 s: only the die event can make this quick.
        slave_wait_for(lambda: not running(job), 5, "the reaper to kill the job of the killed slave")
    finally:
        reaper.stop()
        loop.join(10)
    assert not loop.is_alive()
