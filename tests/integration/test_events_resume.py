"""``GET /v1/events`` on a real cluster: each transition carries an ``id:``, a reader that
reconnects with ``Last-Event-ID`` (on another master too: the ids are the log's) gets what
it missed and nothing twice, and a malformed id is refused naming the header."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from support.cluster import Cluster, wait_until


def read_events(url: str, token: str, count: int, last_id: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", **({"Last-Event-ID": last_id} if last_id else {})}
    events: list[dict[str, Any]] = []
    event_id = None
    with httpx.stream("GET", f"{url}/v1/events", headers=headers, timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                events.append({**json.loads(line[6:]), "sse_id": event_id})
                if len(events) == count:
                    break
    return events


def test_a_reader_resumes_on_another_master_without_a_gap_or_a_repeat(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start_masters(3)
        cluster.start_slave("s1", "--runtime", "simulated")
        first = cluster.masters[0]
        job = cluster.http.post("/v1/jobs", json={"name": "r", "image": "claud/busybox:latest", "command": ["true"]})
        job_id = job.json()["id"]
        wait_until(lambda: cluster.http.get(f"/v1/jobs/{job_id}").json()["state"] == "completed", 30,
                   what="the job completes")
        # From the start of what the first master kept: the job's transitions, in order, with ids.
        seen = read_events(first.url, cluster.token, 2, last_id="0.0")
        assert all(e["sse_id"] == e["event_id"] for e in seen)
        other = next(m for m in cluster.masters if m is not first)
        rest = read_events(other.url, cluster.token, 1, last_id=seen[-1]["event_id"])
        ids = [e["event_id"] for e in seen + rest]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split(".")))) and len(set(ids)) == len(ids)
        mine = [e["state"] for e in seen + rest if e["type"] == "job" and e["id"] == job_id]
        assert mine[:3] == ["pending", "scheduled", "starting"][: len(mine[:3])]

        bad = httpx.get(f"{first.url}/v1/events", headers={"Authorization": f"Bearer {cluster.token}",
                                                           "Last-Event-ID": "yesterday"}, timeout=5)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"
    finally:
        cluster.close()
