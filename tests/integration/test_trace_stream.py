"""GET /v1/cluster/trace on a real 3-master cluster: each master's consensus trace
shows the election and its leader, resumes with Last-Event-ID without repeating
anything, and a follower's trace shows the next leader once the leader dies; with
``masters=all`` one master relays every master's, with their statuses, resumes
by cursor, and says which master stopped answering."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

import httpx
import pytest

from support.cluster import Cluster, Master, wait_until


class TraceReader:
    """Reads one master's trace stream in a thread; the events land in ``events``."""

    def __init__(self, master: Master, token: str, headers: dict[str, str] | None = None, query: str = "") -> None:
        self.events: list[dict[str, Any]] = []
        self.kinds: list[str] = []
        self.ids: list[int] = []
        #: The ``id:`` of each event as sent: a trace id, or the merged stream's cursor.
        self.cursors: list[str] = []
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None), verify=master.verify)
        self._url = f"{master.url}/v1/cluster/trace{query}"
        self._headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(httpx.HTTPError), self._client.stream("GET", self._url, headers=self._headers) as r:
            assert r.status_code == 200, r.read()
            fields: dict[str, str] = {}
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if "data" in fields:
                        if "id" in fields:
                            self.cursors.append(fields["id"])
                            if fields["id"].isdigit():
                                self.ids.append(int(fields["id"]))
                        self.kinds.append(fields.get("event", "message"))
                        self.events.append(json.loads(fields["data"]))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e, k in zip(self.events, self.kinds, strict=False) if k == kind]

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(10)


@pytest.fixture
def cluster(masters_and_simulated_slave: Cluster) -> Cluster:
    return masters_and_simulated_slave


def test_the_trace_shows_the_election_resumes_without_repeats_and_the_next_leader(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    on_leader = TraceReader(leader, cluster.token)
    on_follower = TraceReader(follower, cluster.token)
    try:
        # The election, as each saw it: the leader's own role change, the follower learning its leader.
        wait_until(lambda: any(e["role"] == "leader" and e["leader"] == leader.id for e in on_leader.of("role")), 10,
                   what="the leader's trace to show it became leader")
        assert any(k in ("vote.granted", "election") for k in on_leader.kinds)
        wait_until(lambda: any(e["leader"] == leader.id for e in on_follower.of("role")), 10,
                   what="the follower's trace to name the leader")
        assert all(e["master"] == follower.id for e in on_follower.events)
        # Appends and their answers, and the slave's heartbeats (sampled, but there).
        wait_until(lambda: on_follower.of("append") and on_follower.of("append.answer"), 10,
                   what="appends in the follower's trace")
        wait_until(lambda: any(e["slave"] == cluster.slaves[0].id for e in on_leader.of("slave.heartbeat")), 10,
                   what="the slave's heartbeats in the leader's trace")
        job = cluster.submit(name="traced")
        wait_until(lambda: any(e["job"] == job["id"] and e["state"] == "running" for e in on_follower.of("job")), 20,
                   what="the job's transitions in the follower's trace")
        assert on_leader.ids == sorted(set(on_leader.ids)), "ids only grow, each once"
    finally:
        on_leader.close()

    # Resume where a reader stopped: exactly what followed, by header or by query.
    seen = list(on_follower.ids)
    on_follower.close()
    resume_at = seen[len(seen) // 2]
    for kwargs in ({"headers": {"Last-Event-ID": str(resume_at)}}, {"query": f"?after={resume_at}"}):
        resumed = TraceReader(follower, cluster.token, **kwargs)  # type: ignore[arg-type]
        try:
            wait_until(lambda r=resumed: len(r.ids) >= len(seen) - seen.index(resume_at) - 1, 10,  # type: ignore[misc]
                       what="the replay")
            assert resumed.ids[0] == resume_at + 1
            assert resumed.ids == sorted(set(resumed.ids))
            assert resumed.ids[: len(seen) - seen.index(resume_at) - 1] == seen[seen.index(resume_at) + 1 :]
        finally:
            resumed.close()

    # The leader dies: a surviving follower's trace shows the new leader, in a later term.
    old_term = leader.cluster_view(cluster.token)["term"]
    watching = TraceReader(follower, cluster.token, headers={"Last-Event-ID": str(seen[-1])})
    try:
        leader.kill()
        new = cluster.wait_leader(timeout=15, other_than=leader)
        wait_until(lambda: any(e["leader"] == new.id and e["term"] > old_term for e in watching.of("role")), 10,
                   what="the follower's trace to show the new leader")
        assert watching.ids[0] > seen[-1] and watching.ids == sorted(set(watching.ids))
    finally:
        watching.close()


def _cursor(raw: str) -> dict[int, int]:
    return {int(m): int(i) for m, i in (pair.split(":") for pair in raw.split(","))}


def test_one_master_relays_every_masters_trace_resumes_by_cursor_and_says_who_stopped(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    ids = {m.id for m in cluster.masters}
    merged = TraceReader(follower, cluster.token, query="?masters=all")
    try:
        # Every master's own status and trace, through the follower.
        wait_until(lambda: {e["master"] for e in merged.of("status")} == ids, 10, what="a status of every master")
        assert any(e["master"] == leader.id and e["role"] == "leader" for e in merged.of("status"))
        job = cluster.submit(name="relayed")
        wait_until(lambda: {e["master"] for e in merged.of("job") if e["job"] == job["id"]} == ids, 20,
                   what="the job's transitions in every master's trace")
        # The cursor names each master's last id, and each only grows.
        cursors = [_cursor(c) for c in merged.cursors]
        for master_id in ids:
            seen = [c[master_id] for c in cursors if master_id in c]
            assert seen == sorted(seen)
        per_master = [(e["master"], e["id"]) for e, k in zip(merged.events, merged.kinds, strict=False)
                      if k not in ("status", "relay.lost", "relay.back", "trace.gap")]  # fmt: skip
        assert len(per_master) == len(set(per_master)), "no event twice"
    finally:
        merged.close()

    # Resume from a cursor: nothing at or before it, per master.
    resume_at = merged.cursors[len(merged.cursors) // 2]
    cursor = _cursor(resume_at)
    resumed = TraceReader(follower, cluster.token, headers={"Last-Event-ID": resume_at}, query="?masters=all")
    try:
        wait_until(lambda: len(resumed.cursors) > 3, 10, what="the replay after the cursor")
        for event, kind in zip(resumed.events, resumed.kinds, strict=False):
            if kind not in ("status", "relay.lost", "relay.back", "trace.gap"):
                assert event["id"] > cursor.get(event["master"], 0), (event, cursor)
        # The leader dies: the relay says so at once, and shows the next leader's own word.
        old_term = leader.cluster_view(cluster.token)["term"]
        leader.kill()
        wait_until(lambda: any(e["master"] == leader.id for e in resumed.of("relay.lost")), 10,
                   what="the relay to say the leader stopped answering")
        new = cluster.wait_leader(timeout=15, other_than=leader)
        wait_until(lambda: any(e["master"] == new.id and e["role"] == "leader" and e["term"] > old_term
                               for e in resumed.of("status")), 10, what="the new leader's status")  # fmt: skip
    finally:
        resumed.close()


def test_a_trace_id_or_cursor_that_is_not_one_is_refused_naming_the_header(cluster: Cluster) -> None:
    for bad in ("x", "-1", "1e9", "9" * 20):
        resp = cluster.http.get("/v1/cluster/trace", headers={"Last-Event-ID": bad})
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["field"] == "Last-Event-ID"
    resp = cluster.http.get("/v1/cluster/trace", params={"after": "-3"})
    assert resp.status_code == 422
    assert httpx.get(f"{cluster.master.url}/v1/cluster/trace", timeout=5).status_code == 401
    for bad in ("x", "1", "1:", ":5", "1:2,", "1:2;3:4", "1:" + "9" * 20, ",".join(f"{i}:1" for i in range(40))):
        resp = cluster.http.get("/v1/cluster/trace", params={"masters": "all"}, headers={"Last-Event-ID": bad})
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["field"] == "Last-Event-ID"
    resp = cluster.http.get("/v1/cluster/trace", params={"masters": "some"})
    assert resp.status_code == 422
    # The internal route a relaying master polls takes the cluster secret, never the token.
    resp = cluster.http.get("/v1/internal/trace")
    assert resp.status_code == 401
