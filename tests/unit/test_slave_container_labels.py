"""The labels that make a container an allocation slot (``claud.index``) of a job version
(``claud.version``): written by the Docker runtime, read back into ``Observed``, and what a
container from before replicas reads as. No engine: the SDK's low-level client is faked."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from claud.api import Allocation, DesiredState, Resources
from claud.slave.reconciler import slot_of
from claud.slave.runtime import Phase
from claud.slave.runtime.docker import DockerRuntime, index_of, observed_from_inspect, version_of
from claud.slave.runtime.simulated import SimulatedRuntime


def replica(job_id: str, index: int, attempt: int, version: int = 0) -> Allocation:
    alloc_id = f"{job_id}-{attempt}" if index == 0 else f"{job_id}.{index}-{attempt}"
    return Allocation(
        alloc_id=alloc_id, job_id=job_id, attempt=attempt, index=index, version=version,
        desired=DesiredState.RUN, image="claud/busybox:latest", command=["sleep", "60"],
        resources=Resources(cpu=0.1, memory_mb=16),
    )


class FakeApi:
    """What the runtime asks of ``docker.APIClient`` to create and list, answered from memory."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.infos: dict[str, dict[str, Any]] = {}

    def create_host_config(self, **kw: Any) -> dict[str, Any]:
        return kw

    def create_container(self, **kw: Any) -> dict[str, str]:
        self.created.append(kw)
        return {"Id": f"c{len(self.created)}"}

    def containers(self, **kw: Any) -> list[dict[str, Any]]:
        return self.rows

    def inspect_container(self, cid: str) -> dict[str, Any]:
        return self.infos[cid]

    def add_running(self, cid: str, labels: dict[str, str]) -> None:
        self.rows.append({"Id": cid, "State": "running", "Labels": labels})
        self.infos[cid] = {
            "Id": cid, "Config": {"Labels": labels}, "Created": "2026-12-04T18:00:00.5Z",
            "State": {"Status": "running", "Pid": 4242, "StartedAt": "2026-12-04T18:00:01Z"},
        }


def fake_runtime() -> tuple[DockerRuntime, FakeApi]:
    rt = DockerRuntime("s1", extra_labels={"claud.index": "9", "team": "a"}, workers=1, fence_workers=1)
    api = FakeApi()
    rt._api = lambda: api  # type: ignore[method-assign,assignment,return-value]
    rt._pinned = True
    return rt, api


def test_a_container_is_labelled_with_its_index_and_version() -> None:
    rt, api = fake_runtime()
    try:
        rt._create_sync(replica("web", 2, 3, version=7))
    finally:
        asyncio.run(rt.aclose())
    (created,) = api.created
    assert created["name"] == "claud-web.2-3"
    # The slave's own labels win over a configured extra label of the same key.
    assert created["labels"] == {
        "team": "a", "claud.slave": "s1", "claud.job": "web", "claud.alloc": "web.2-3",
        "claud.index": "2", "claud.version": "7",
    }


def test_listed_containers_carry_their_index_and_version_on_every_path() -> None:
    rt, api = fake_runtime()
    api.add_running("c1", {"claud.slave": "s1", "claud.job": "web", "claud.alloc": "web.2-3",
                           "claud.index": "2", "claud.version": "7"})
    api.add_running("c2", {"claud.slave": "s1", "claud.job": "web", "claud.alloc": "web-1"})
    try:
        listed = {o.alloc_id: o for o in rt._list_sync()}
        fenced = {o.alloc_id: o for o in rt._running_sync()}
    finally:
        asyncio.run(rt.aclose())
    for seen in (listed, fenced):
        assert (seen["web.2-3"].index, seen["web.2-3"].version) == (2, 7)
        assert (seen["web-1"].index, seen["web-1"].version) == (0, 0)  # from before replicas
    assert listed["web.2-3"].phase is Phase.RUNNING and listed["web.2-3"].pid == 4242


def test_a_container_without_claud_index_holds_index_0_or_the_one_its_id_names() -> None:
    old = {"claud.job": "web", "claud.alloc": "web-4"}
    assert index_of(old) == 0 and version_of(old) == 0
    # A replica an agent from before this label ran for masters that had replicas already.
    assert index_of({"claud.job": "web", "claud.alloc": "web.3-1"}) == 3
    # A job id may hold dots and dashes itself: the job label says where the suffix starts.
    assert index_of({"claud.job": "a.5", "claud.alloc": "a.5-1"}) == 0
    assert index_of({"claud.job": "a-1", "claud.alloc": "a-1.2-9"}) == 2
    assert index_of({"claud.job": "web", "claud.alloc": "webx.3-1"}) == 0
    # A label someone spoiled: the id decides, as without one.
    assert index_of({"claud.job": "web", "claud.alloc": "web.3-1", "claud.index": "three"}) == 3
    assert version_of({"claud.version": "-1"}) == 0


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(ids, st.integers(0, 2**63 - 1), st.integers(0, 10_000), st.integers(0, 2**63 - 1), st.booleans())
def test_property_what_is_written_reads_back_as_the_allocations_slot(
    job_id: str, index: int, attempt: int, version: int, labelled: bool
) -> None:
    """Labelled or not (an agent from before the labels), a container reads as its allocation's slot."""
    a = replica(job_id, index, attempt, version)
    labels = {"claud.slave": "s1", "claud.job": a.job_id, "claud.alloc": a.alloc_id}
    if labelled:
        labels |= {"claud.index": str(a.index), "claud.version": str(a.version)}
    o = observed_from_inspect({"Id": "c", "Config": {"Labels": labels}, "State": {"Status": "exited"}})
    assert o is not None and slot_of(o) == slot_of(a)
    assert o.version == (a.version if labelled else 0)


def test_the_simulated_runtime_observes_index_and_version() -> None:
    async def scenario() -> None:
        rt = SimulatedRuntime("s1")
        for a in (replica("web", 0, 1, 3), replica("web", 1, 1, 3), replica("web", 2, 5, 4)):
            await rt.start(a)
        assert sorted((o.alloc_id, o.index, o.version) for o in await rt.list()) == [
            ("web-1", 0, 3), ("web.1-1", 1, 3), ("web.2-5", 2, 4),
        ]

    asyncio.run(scenario())
