"""Nothing anyone sends can stall the cluster (issue 10).

Each case sends one odd request (a header, a body, a heartbeat, a peer
message) to a real three-master cluster, byte for byte over a raw socket so
that no client library tidies it up first. Each must be refused with a 4xx
JSON error body, and afterwards an ordinary submit to another master must be
acknowledged within 5 s. At the end every master restarts on its data
directory and the cluster still commits, with every acknowledged job there.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from typing import Any

import httpx
import pytest

from claud.api.protocol import (
    CLUSTER_SECRET_HEADER,
    HEARTBEAT_PATH,
    INTERNAL_PREFIX,
    PROPOSE_PATH,
    RAFT_PATH,
    SNAPSHOT_CHUNK_HEADER,
    SNAPSHOT_CHUNK_PATH,
    WATCH_PATH,
    WHOAMI_PATH,
)
from support.cluster import Cluster, wait_until

SPEC = {"name": "ok", "image": "claud/busybox:latest", "command": ["true"]}


def raw_request(address: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                chunked: bool = False, timeout: float = 15) -> tuple[int, dict[str, str], bytes]:
    """One request as exactly these bytes; the status, headers and body of the answer."""
    host, port = address.rsplit(":", 1)
    head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {address}".encode(), b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in _chunks(body, 65536)) + b"0\r\n\r\n"
    else:
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        # Refused before the whole body went out (413): the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    answer_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if answer_headers.get("transfer-encoding") == "chunked":
        rest = _dechunk(rest)
    return status, answer_headers, rest


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


@pytest.fixture(scope="module")
def hostile_cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("hostile"))  # its masters share c.secret_file
    c.acknowledged = []
    try:
        c.start_masters(3)
        yield c
    finally:
        c.close()


def _json_body(spec: dict[str, Any]) -> bytes:
    return json.dumps(spec).encode()


def _heartbeat(**overrides: Any) -> dict[str, Any]:
    hb = {"node_id": "hostile-s1", "address": "127.0.0.1:1", "cpu_total": 2.0, "memory_mb_total": 1024,
          "labels": {}, "allocations": []}
    hb.update(overrides)
    return hb


def _raw_heartbeat(**overrides: str) -> bytes:
    """A heartbeat with some fields given as raw JSON text (NaN, Infinity, 1e400 cannot be built by json.dumps)."""
    hb = _heartbeat()
    text = json.dumps({k: v for k, v in hb.items() if k not in overrides})
    extra = ",".join(f'"{k}":{v}' for k, v in overrides.items())
    return (text[:-1] + ("," if extra else "") + extra + "}").encode()


JSON = (b"content-type", b"application/json")
OCTETS = (b"content-type", b"application/octet-stream")
HUGE = 40 * 1024 * 1024


def _chunk(**overrides: Any) -> tuple[bytes, bytes]:
    """A snapshot chunk's header (a 10-byte snapshot from master 9, unless overridden)."""
    header = {"transfer": "ab" * 16, "leader": 9, "term": 1, "index": 5, "snapshot_term": 1, "size": 10,
              "sha256": "00" * 32, "offset": 0, "config": "", **overrides}
    return SNAPSHOT_CHUNK_HEADER.lower().encode(), json.dumps(header).encode()

# (id, target, method, path, headers, body, chunked, statuses that count as a clear refusal)
# target: "any" (a follower), "leader"; internal paths get the cluster secret added.
CASES: list[tuple[str, str, str, str, list[tuple[bytes, bytes]], bytes, bool, set[int]]] = [
    ("empty-idempotency-key", "any", "POST", "/v1/jobs", [JSON, (b"idempotency-key", b"")], _json_body(SPEC), False, {422}),
    ("long-idempotency-key", "any", "POST", "/v1/jobs", [JSON, (b"idempotency-key", b"k" * 201)], _json_body(SPEC), False, {422}),
    ("control-char-idempotency-key", "any", "POST", "/v1/jobs", [JSON, (b"idempotency-key", b"a\x01b")], _json_body(SPEC), False, {400, 422}),
    ("del-idempotency-key", "any", "POST", "/v1/jobs", [JSON, (b"idempotency-key", b"a\x7fb")], _json_body(SPEC), False, {400, 422}),
    ("latin1-idempotency-key", "any", "POST", "/v1/jobs", [JSON, (b"idempotency-key", b"caf\xe9")], _json_body(SPEC), False, {422}),
    ("two-idempotency-keys", "any", "POST", "/v1/jobs", [JSON, (b"idempotency-key", b"a"), (b"idempotency-key", b"b")], _json_body(SPEC), False, {422}),
    ("nan-cpu", "any", "POST", "/v1/jobs", [JSON], b'{"name":"x","image":"claud/busybox","resources":{"cpu":NaN}}', False, {400, 422}),
    ("infinity-stop-timeout", "any", "POST", "/v1/jobs", [JSON], b'{"name":"x","image":"claud/busybox","stop_timeout":Infinity}', False, {400, 422}),
    ("1e400-cpu", "any", "POST", "/v1/jobs", [JSON], b'{"name":"x","image":"claud/busybox","resources":{"cpu":1e400}}', False, {400, 422}),
    ("5000-digit-memory", "any", "POST", "/v1/jobs", [JSON], b'{"name":"x","image":"claud/busybox","resources":{"memory_mb":1' + b"0" * 5000 + b"}}", False, {400, 422}),
    ("lone-surrogate-env", "any", "POST", "/v1/jobs", [JSON], b'{"name":"x","image":"claud/busybox","env":{"A":"\\ud800"}}', False, {400, 422}),
    ("lone-surrogate-command", "any", "POST", "/v1/jobs", [(b"content-type", b"application/x-claud-test+json")], b'{"name":"x","image":"claud/busybox","command":["\\udfff"]}', False, {400, 422}),
    ("invalid-utf8", "any", "POST", "/v1/jobs", [JSON], b'{"name":"x","image":"claud/busybox","env":{"A":"\xff"}}', False, {400, 422}),
    ("deep-nesting", "any", "POST", "/v1/jobs", [JSON], b"[" * 200_000 + b"]" * 200_000, False, {400, 413, 422}),
    ("not-json", "any", "POST", "/v1/jobs", [JSON], b"{name: x", False, {400}),
    ("json-array", "any", "POST", "/v1/jobs", [JSON], b"[1,2]", False, {422}),
    ("40MB-spec", "any", "POST", "/v1/jobs", [JSON], _json_body({**SPEC, "env": {"A": "x" * HUGE}}), False, {413}),
    ("40MB-spec-chunked", "any", "POST", "/v1/jobs", [JSON], _json_body({**SPEC, "env": {"A": "x" * HUGE}}), True, {413}),
    ("huge-env", "any", "POST", "/v1/jobs", [JSON], _json_body({**SPEC, "env": {f"K{i}": "v" * 1000 for i in range(600)}}), False, {413, 422}),
    ("many-args", "any", "POST", "/v1/jobs", [JSON], _json_body({**SPEC, "command": ["x"] * 5000}), False, {422}),
    ("long-label", "any", "POST", "/v1/jobs", [JSON], _json_body({**SPEC, "constraints": {"labels": {"zone": "a" * 5000}}}), False, {422}),
    ("bad-state-filter", "any", "GET", "/v1/jobs?state=bogus", [], b"", False, {422}),
    ("long-job-id", "any", "GET", "/v1/jobs/" + "a" * 5000, [], b"", False, {404, 414, 422}),
    ("stop-unknown-job", "any", "DELETE", "/v1/jobs/%00%ff", [], b"", False, {404, 422}),
    ("drain-unknown", "any", "POST", "/v1/nodes/" + "n" * 300 + "/drain", [], b"", False, {404, 422}),
    ("heartbeat-nan", "leader", "POST", HEARTBEAT_PATH, [JSON], _raw_heartbeat(cpu_total="NaN"), False, {400, 422}),
    ("heartbeat-infinity", "leader", "POST", HEARTBEAT_PATH, [JSON], _raw_heartbeat(memory_mb_total="Infinity"), False, {400, 422}),
    ("heartbeat-usage-nan", "leader", "POST", HEARTBEAT_PATH, [JSON], _raw_heartbeat(usage='{"cpu_percent":NaN}'), False, {400, 422}),
    ("heartbeat-1e300-cpu", "leader", "POST", HEARTBEAT_PATH, [JSON], _json_body(_heartbeat(cpu_total=1e300)), False, {400, 422}),
    ("heartbeat-bad-address", "leader", "POST", HEARTBEAT_PATH, [JSON], _json_body(_heartbeat(address="127.0.0.1:18900" + WHOAMI_PATH + "?")), False, {400, 422}),
    ("heartbeat-empty-id", "leader", "POST", HEARTBEAT_PATH, [JSON], _json_body(_heartbeat(node_id="")), False, {400, 422}),
    ("heartbeat-huge-exit-code", "leader", "POST", HEARTBEAT_PATH, [JSON], _json_body(_heartbeat(allocations=[{"alloc_id": "j-1", "job_id": "j", "state": "exited", "exit_code": 2**70}])), False, {400, 422}),
    ("heartbeat-surrogate-label", "leader", "POST", HEARTBEAT_PATH, [JSON], b'{"node_id":"s","address":"127.0.0.1:1","cpu_total":1,"memory_mb_total":64,"labels":{"a":"\\ud800"}}', False, {400, 422}),
    ("watch-nan", "leader", "POST", WATCH_PATH, [JSON], b'{"node_id":"s","known_version":0,"wait_seconds":NaN}', False, {400, 422}),
    ("propose-nan", "leader", "POST", PROPOSE_PATH, [JSON], b'{"ops":[{"kind":"register_node","at":"2026-01-01T00:00:00Z","node_id":"x","address":"127.0.0.1:1","cpu_total":NaN,"memory_mb_total":1}]}', False, {400}),
    ("propose-1e300", "leader", "POST", PROPOSE_PATH, [JSON], _json_body({"ops": [{"kind": "register_node", "at": "2026-01-01T00:00:00Z", "node_id": "x", "address": "127.0.0.1:1", "cpu_total": 1e300, "memory_mb_total": 1}]}), False, {400}),
    ("propose-unknown-kind", "leader", "POST", PROPOSE_PATH, [JSON], _json_body({"ops": [{"kind": "drop_tables", "at": "2026-01-01T00:00:00Z"}]}), False, {400}),
    ("propose-bad-spec", "leader", "POST", PROPOSE_PATH, [JSON], _json_body({"ops": [{"kind": "submit_job", "at": "2026-01-01T00:00:00Z", "job_id": "j", "spec": {"name": "x", "image": "claud/busybox", "idempotency_key": ""}}]}), False, {400}),
    ("propose-deep-nesting", "leader", "POST", PROPOSE_PATH, [JSON], b'{"ops":' + b"[" * 200_000 + b"]" * 200_000 + b"}", False, {400}),
    ("raft-out-of-sequence", "any", "POST", RAFT_PATH, [JSON], _json_body({"messages": [{"type": "AppendEntries", "src": 2, "dst": 1, "term": 1, "prev_index": 5, "prev_term": 1, "commit": 0, "entries": [[9, 1, "x"]]}]}), False, {400}),
    ("raft-nan", "any", "POST", RAFT_PATH, [JSON], b'{"messages":[{"type":"TimeoutNow","src":2,"dst":1,"term":NaN}]}', False, {400}),
    ("raft-negative", "any", "POST", RAFT_PATH, [JSON], _json_body({"messages": [{"type": "TimeoutNow", "src": 2, "dst": 1, "term": -5}]}), False, {400}),
    ("raft-not-a-list", "any", "POST", RAFT_PATH, [JSON], b'{"messages":{"a":1}}', False, {400}),
    ("snapshot-chunk-as-json", "any", "POST", SNAPSHOT_CHUNK_PATH, [JSON, _chunk()], b"x" * 10, False, {415}),
    ("snapshot-chunk-no-header", "any", "POST", SNAPSHOT_CHUNK_PATH, [OCTETS], b"x" * 10, False, {400}),
    ("snapshot-chunk-bad-header", "any", "POST", SNAPSHOT_CHUNK_PATH, [OCTETS, (_chunk()[0], b"{nope")], b"x", False, {400}),
    ("snapshot-chunk-negative", "any", "POST", SNAPSHOT_CHUNK_PATH, [OCTETS, _chunk(offset=-1)], b"x" * 10, False, {400}),
    ("snapshot-chunk-past-end", "any", "POST", SNAPSHOT_CHUNK_PATH, [OCTETS, _chunk(size=4)], b"x" * 10, False, {400}),
    ("snapshot-chunk-9MiB", "any", "POST", SNAPSHOT_CHUNK_PATH, [OCTETS, _chunk(size=16 << 20)], b"x" * (9 << 20), False, {413}),
    ("snapshot-chunk-unknown-transfer", "any", "POST", SNAPSHOT_CHUNK_PATH, [OCTETS, _chunk(offset=5)], b"x" * 5, False, {409}),
    ("snapshot-chunk-bad-checksum", "any", "POST", SNAPSHOT_CHUNK_PATH, [OCTETS, _chunk()], b"x" * 10, False, {422}),
]


def _target(cluster: Cluster, which: str):
    leader = cluster.wait_leader()
    if which == "leader":
        return leader
    return next(m for m in cluster.masters if m.id != leader.id)


def _ordinary_submit_elsewhere(cluster: Cluster, not_on: Any) -> None:
    other = next(m for m in cluster.masters if m.alive and m is not not_on)
    key = uuid.uuid4().hex
    started = time.monotonic()

    def acknowledged() -> dict[str, Any] | None:
        try:
            resp = httpx.post(f"{other.url}/v1/jobs", json=SPEC, timeout=5,
                              headers={"Authorization": f"Bearer {cluster.token}", "Idempotency-Key": key})
        except httpx.HTTPError:
            return None
        return resp.json() if resp.status_code in (200, 201) else None

    job = wait_until(acknowledged, 5, interval=0.1, what=f"an ordinary submit to master {other.id}")
    cluster.acknowledged.append(job["id"])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_odd_request_is_refused_and_the_cluster_still_commits(hostile_cluster: Cluster, case) -> None:
    _, which, method, path, headers, body, chunked, expected = case
    target = _target(hostile_cluster, which)
    headers = [*headers, (b"authorization", f"Bearer {hostile_cluster.token}".encode())]
    if path.startswith(INTERNAL_PREFIX):
        headers.append((CLUSTER_SECRET_HEADER.lower().encode(), hostile_cluster.secret.encode()))
    status, answer_headers, answer = raw_request(target.address, method, path, headers, body, chunked)
    assert status in expected, (status, answer[:500])
    assert answer_headers.get("content-type", "").startswith("application/json"), (status, answer_headers, answer[:300])
    error = json.loads(answer)["error"]
    assert error["code"] and error["message"]
    if status == 413:
        assert str(1024 * 1024) in error["message"] or "limit" in error["message"]
    for master in hostile_cluster.masters:
        assert master.alive, f"master {master.id} exited:\n{master.log()[-2000:]}"
    _ordinary_submit_elsewhere(hostile_cluster, target)


@pytest.mark.parametrize("address", ["0.0.0.0:8701", "[::]:8701", "0:8701", "[::ffff:0.0.0.0]:8701"])
def test_a_heartbeat_from_a_wildcard_address_is_refused_naming_the_field(hostile_cluster: Cluster, address: str) -> None:
    """The masters send the cluster secret to a slave's address for its logs: one naming
    no host would send it to whatever listens on the master's own machine."""
    leader = hostile_cluster.wait_leader()
    node_id = f"wild-{abs(hash(address)) % 10_000}"
    resp = httpx.post(leader.url + HEARTBEAT_PATH, json=_heartbeat(node_id=node_id, address=address),
                      headers={CLUSTER_SECRET_HEADER: hostile_cluster.secret}, timeout=10)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == "address" and "names no host" in error["message"], error
    nodes = httpx.get(f"{leader.url}/v1/nodes", headers={"Authorization": f"Bearer {hostile_cluster.token}"}, timeout=10)
    assert node_id not in {n["id"] for n in nodes.json()["nodes"]}


def test_field_named_in_idempotency_key_error(hostile_cluster: Cluster) -> None:
    target = _target(hostile_cluster, "any")
    status, _, answer = raw_request(
        target.address, "POST", "/v1/jobs",
        [JSON, (b"idempotency-key", b""), (b"authorization", f"Bearer {hostile_cluster.token}".encode())],
        _json_body(SPEC),
    )
    assert status == 422
    error = json.loads(answer)["error"]
    assert error["field"] == "Idempotency-Key" and "Idempotency-Key" in error["message"]


def test_a_valid_header_key_is_one_job(hostile_cluster: Cluster) -> None:
    target = _target(hostile_cluster, "any")
    auth = {"Authorization": f"Bearer {hostile_cluster.token}", "Idempotency-Key": "retry-me"}
    first = httpx.post(f"{target.url}/v1/jobs", json=SPEC, headers=auth, timeout=10)
    again = httpx.post(f"{target.url}/v1/jobs", json=SPEC, headers=auth, timeout=10)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["idempotency_key"] == "retry-me"
    hostile_cluster.acknowledged.append(first.json()["id"])


def test_zz_after_a_restart_of_every_master_the_cluster_still_commits(hostile_cluster: Cluster) -> None:
    """Runs last in the module: whatever the cases left in the log, every master restarts from it."""
    for master in list(hostile_cluster.masters):
        master.terminate()
    for master in list(hostile_cluster.masters):
        hostile_cluster.start_master(master.id, wait=False)
    leader = hostile_cluster.wait_leader(timeout=30)
    _ordinary_submit_elsewhere(hostile_cluster, leader)
    with httpx.Client(base_url=leader.url, headers={"Authorization": f"Bearer {hostile_cluster.token}"}, timeout=10) as http:
        for job_id in hostile_cluster.acknowledged:
            assert http.get(f"/v1/jobs/{job_id}").status_code == 200, job_id
        rejected = [line for line in http.get("/metrics").text.splitlines() if line.startswith("claud_rejected_entries_total")]
    assert rejected, "the metrics name the rejected entries"
