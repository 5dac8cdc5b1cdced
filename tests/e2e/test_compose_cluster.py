"""The compose demo cluster (compose.yaml), cut and killed with Docker itself.

One cluster per module (3 masters, 3 slaves, its own compose project, Docker's
choice of host ports), from the images of `make images` (which `make test`
builds first; these tests only check that they exist) and torn down
completely afterwards: containers, network, volumes and the jobs'
containers. Every wait polls a condition against a deadline derived from the
masters' timeouts (their defaults; compose.yaml does not change them).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from support.compose import API_PORT, MASTER_IDS, SLAVE_NUMBERS, ComposeCluster, docker, missing_images, wait_for

pytestmark = pytest.mark.docker

# claud-master's defaults (claud-master --help), which compose.yaml keeps.
SLAVE_LEASE = 4.0  # a slave that hears no leader this long stops its containers
FENCE_STOP_GRACE = 3.0  # ...each within this SIGTERM grace
NODE_DEAD_AFTER = 10.0  # the leader reschedules a silent slave's jobs after this long
# Two cores run six CLAUD processes and the engine: room for scheduling delays.
SLACK = 5.0


@pytest.fixture(scope="module")
def compose_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeCluster]:
    if shutil.which("docker-compose") is None:
        # `docker compose` (v2) would do too; deploy/cluster.sh picks either.
        proc = docker("compose", "version", check=False)
        if not proc:
            pytest.fail("neither docker-compose nor `docker compose` is installed")
    missing = missing_images()
    if missing:
        # A failure, not a skip: `make test` builds them first, so a missing
        # image is a broken set-up, which must not pass for a green run.
        pytest.fail(
            f"missing images {', '.join(missing)}: run `make images` first (`make test` does); "
            "tests do not build images, a cold build takes minutes",
            pytrace=False,
        )
    cluster = ComposeCluster(tmp_path_factory.mktemp("compose"))
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
    left = cluster.leftovers()
    assert not left, f"the compose cluster left these behind: {left}"


def job_spec(name: str, **extra: Any) -> dict[str, Any]:
    """A service job that runs until stopped, and stops at once on SIGTERM."""
    return {
        "name": name,
        "image": "claud/busybox:latest",
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
        "resources": {"cpu": 0.25, "memory_mb": 32},
        "type": "service",
        "stop_timeout": 1,
        **extra,
    }


def docker_time(value: str) -> datetime:
    """Docker's RFC 3339 timestamps with nanoseconds, to microseconds."""
    whole, _, fraction = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6].ljust(6, '0')}+00:00")


def healthy(cluster: ComposeCluster, timeout: float = 60) -> tuple[int, int]:
    """Wait until all masters agree on a leader and all slaves are alive; (leader, term)."""
    leader = wait_for(cluster.agreed_leader, timeout, "all three masters agreeing on a leader")
    wait_for(
        lambda: len([s for s in cluster.slaves(leader[0]).values() if s["state"] == "alive"]) == 3,
        timeout, "three slaves alive",
    )
    return leader


def running_jobs(cluster: ComposeCluster, master_id: int, job_ids: list[str]) -> dict[str, dict[str, Any]] | None:
    jobs = {job_id: cluster.job(master_id, job_id) for job_id in job_ids}
    return jobs if all(j["state"] == "running" for j in jobs.values()) else None


def stop_jobs(cluster: ComposeCluster, job_ids: list[str]) -> None:
    for job_id in job_ids:
        for master_id in MASTER_IDS:
            # A master that is down raises: try the next.
            with contextlib.suppress(Exception):
                if cluster.request(master_id, "DELETE", f"/v1/jobs/{job_id}").status_code < 500:
                    break


def submit_running(cluster: ComposeCluster, leader: int, count: int, tag: str) -> dict[str, dict[str, Any]]:
    ids = [cluster.submit(leader, job_spec(f"{tag}-{i}"))["id"] for i in range(count)]
    return wait_for(lambda: running_jobs(cluster, leader, ids), 60, f"{count} {tag} jobs running")


# --------------------------------------------------------------------- tests


def test_masters_find_each_other_by_broadcast_and_the_lowest_id_leads(compose_cluster: ComposeCluster) -> None:
    cluster = compose_cluster
    for master_id in MASTER_IDS:
        config = docker("inspect", "--format", "{{json .Config.Cmd}} {{json .Config.Env}}", cluster.master(master_id))
        assert "--peers" not in config and "CLAUD_PEERS" not in config, f"master {master_id} was given peers: {config}"
        assert "--no-discovery" not in config and "CLAUD_NO_DISCOVERY" not in config

    leader, _term = wait_for(cluster.agreed_leader, 60, "all three masters agreeing on a leader")
    assert leader == 1, f"master {leader} leads; the lowest id, 1, should"
    for master_id in MASTER_IDS:
        view = cluster.cluster_view(master_id)
        assert view["quorum"] == 2
        assert {m["id"]: m["address"] for m in view["masters"]} == {
            i: f"{cluster.master(i)}:8700" for i in MASTER_IDS
        }, f"master {master_id} knows {view['masters']}"


def test_slaves_find_the_masters_and_report_their_cgroup_limits(compose_cluster: ComposeCluster) -> None:
    cluster = compose_cluster
    for n in SLAVE_NUMBERS:
        config = docker("inspect", "--format", "{{json .Config.Cmd}} {{json .Config.Env}}", cluster.slave(n))
        assert "--masters" not in config and "CLAUD_MASTERS" not in config, f"slave {n} was given masters: {config}"
    leader, _ = wait_for(cluster.agreed_leader, 60, "an agreed leader")
    slaves = wait_for(
        lambda: (s := cluster.slaves(leader)) and all(v["state"] == "alive" for v in s.values()) and len(s) == 3 and s,
        60, "three slaves alive",
    )
    assert set(slaves) == {cluster.slave_id(n) for n in SLAVE_NUMBERS}
    for slave_id, view in slaves.items():
        # compose.yaml gives each slave container cpus: 1.0 and mem_limit: 512m;
        # the host has more of both, so these figures can only come from the cgroup.
        assert view["resources"]["cpu_total"] == pytest.approx(1.0), (slave_id, view["resources"])
        assert view["resources"]["memory_mb_total"] == 512, (slave_id, view["resources"])
        assert view["address"] == f"{cluster.slave(cluster.slave_number(slave_id))}:8701"


def test_cut_off_leader_steps_down_and_rejoins_with_the_majoritys_history(compose_cluster: ComposeCluster) -> None:
    cluster = compose_cluster
    old_leader, old_term = healthy(cluster)
    majority = tuple(i for i in MASTER_IDS if i != old_leader)
    before = cluster.submit(majority[0], job_spec("before-the-partition", type="batch", command=["true"]))
    cut = cluster.master(old_leader)

    cluster.disconnect(cut)
    try:
        cut_at = time.monotonic()
        new_leader, new_term = wait_for(
            lambda: (agreed := cluster.agreed_leader(majority)) and agreed[0] != old_leader and agreed,
            10 + SLACK, "the majority electing a new leader",
        )
        elected_after = time.monotonic() - cut_at
        assert new_term > old_term

        # The deposed leader knows it no longer leads...
        def stepped_down() -> dict[str, Any] | None:
            status, view = cluster.exec_request(cut, "GET", "/v1/cluster")
            assert status == 200, view
            return view if view["leader_id"] != old_leader else None

        wait_for(stepped_down, 10 + SLACK, f"master {old_leader}, cut off, to step down")
        # ...and refuses writes: it cannot reach a quorum.
        refused_key = f"refused-{uuid.uuid4().hex}"
        status, body = cluster.exec_request(
            cut, "POST", "/v1/jobs", job_spec("written-to-the-cut-off-master", idempotency_key=refused_key)
        )
        assert status == 503, f"the cut-off master answered a write with {status}: {body}"

        # The majority goes on: a write through the follower of the majority side.
        during = cluster.submit(majority[-1] if majority[-1] != new_leader else majority[0],
                                job_spec("during-the-partition", type="batch", command=["true"]))
        majority_commit = cluster.cluster_view(new_leader)["commit_index"]
    finally:
        if not cluster.connected(cut):
            cluster.connect(cut)

    # Back on the network it follows the majority's history: same (newer) term,
    # the job written during the partition, not the one it refused.
    def rejoined() -> dict[str, Any] | None:
        view = cluster.cluster_view(old_leader)
        if view["leader_id"] is None or view["term"] < new_term or view["commit_index"] < majority_commit:
            return None
        if cluster.request(old_leader, "GET", f"/v1/jobs/{during['id']}").status_code != 200:
            return None
        return view

    view = wait_for(rejoined, 30 + SLACK, f"master {old_leader} to rejoin with the majority's history")
    # It never leads again in its stale term: either it follows the new leader,
    # or (lowest id) took the lead back in a later term, having caught up first.
    assert view["leader_id"] != old_leader or view["term"] > new_term, view
    leader, _ = wait_for(cluster.agreed_leader, 30, "all three masters agreeing on a leader again")
    for master_id in MASTER_IDS:
        names = {j["name"] for j in cluster.get(master_id, "/v1/jobs")["jobs"]}
        assert {"before-the-partition", "during-the-partition"} <= names, (master_id, names)
        assert "written-to-the-cut-off-master" not in names, f"master {master_id} has the refused write"
    assert cluster.job(leader, before["id"])["id"] == before["id"]
    print(f"new leader {new_leader} elected {elected_after:.1f}s after the cut; now master {leader} leads")


def test_cut_off_slave_stops_its_jobs_within_its_lease_and_they_run_elsewhere(
    compose_cluster: ComposeCluster,
) -> None:
    cluster = compose_cluster
    leader, _ = healthy(cluster)
    jobs = submit_running(cluster, leader, 2, "lease")
    victim = next(iter(jobs.values()))["node_id"]
    victim_jobs = {job_id: job for job_id, job in jobs.items() if job["node_id"] == victim}
    old_containers = {job_id: job["container_id"] for job_id, job in victim_jobs.items()}
    slave = cluster.slave(cluster.slave_number(victim))

    cluster.disconnect(slave)
    try:
        cut_at = time.monotonic()

        def old_copies_stopped() -> bool:
            states = [docker("inspect", "--format", "{{.State.Running}}", cid) for cid in old_containers.values()]
            return all(state == "false" for state in states)

        # The slave hears no leader: after its lease (plus the stop grace) its containers are down,
        wait_for(old_copies_stopped, SLAVE_LEASE + FENCE_STOP_GRACE + SLACK,
                 f"slave {victim}, cut off, to stop its jobs' containers")
        stopped_after = time.monotonic() - cut_at
        # ...before the masters give its jobs to another slave.
        assert stopped_after < NODE_DEAD_AFTER, f"old copies ran {stopped_after:.1f}s, past the dead-after timeout"

        moved = wait_for(
            lambda: (r := running_jobs(cluster, leader, list(victim_jobs)))
            and all(j["node_id"] != victim for j in r.values()) and r,
            NODE_DEAD_AFTER + 20 + SLACK, f"the jobs of slave {victim} running elsewhere",
        )
        # Never in two places at once: each old copy ended before its new copy started.
        for job_id, job in moved.items():
            old = docker_time(docker("inspect", "--format", "{{.State.FinishedAt}}", old_containers[job_id]))
            new = docker_time(docker("inspect", "--format", "{{.State.StartedAt}}", job["container_id"]))
            assert old < new, f"job {job_id} ran twice: old copy ended {old}, new one started {new}"
    finally:
        if not cluster.connected(slave):
            cluster.connect(slave)
        stop_jobs(cluster, list(jobs))
    healthy(cluster, timeout=30 + SLACK)


def test_killed_slave_takes_its_jobs_down_and_they_run_elsewhere(compose_cluster: ComposeCluster) -> None:
    cluster = compose_cluster
    leader, _ = healthy(cluster)
    jobs = submit_running(cluster, leader, 2, "kill")
    victim = next(iter(jobs.values()))["node_id"]
    victim_jobs = {job_id: job for job_id, job in jobs.items() if job["node_id"] == victim}
    old_containers = {job_id: job["container_id"] for job_id, job in victim_jobs.items()}
    slave = cluster.slave(cluster.slave_number(victim))

    docker("kill", slave)
    try:
        killed_at = docker_time(docker("inspect", "--format", "{{.State.FinishedAt}}", slave))
        moved = wait_for(
            lambda: (r := running_jobs(cluster, leader, list(victim_jobs)))
            and all(j["node_id"] != victim for j in r.values()) and r,
            NODE_DEAD_AFTER + 20 + SLACK, f"the jobs of killed slave {victim} running elsewhere",
        )
        assert all(job["container_id"] not in old_containers.values() for job in moved.values())

        # A machine failure takes its containers down with it: the reaper
        # kills the jobs of a slave container that died.
        for job_id, container_id in old_containers.items():
            state = docker("inspect", "--format", "{{.State.Running}} {{.State.FinishedAt}}", container_id)
            running, finished = state.split()
            assert running == "false", (
                f"job {job_id}'s container {container_id[:12]} still runs after its slave container was "
                f"killed: is {cluster.project}-reaper (claud-orphan-reaper, see deploy/COMPOSE.md) running?"
            )
            lag = (docker_time(finished) - killed_at).total_seconds()
            assert lag < 3, f"job {job_id}'s container outlived its slave by {lag:.1f}s"
    finally:
        docker("start", slave)
        stop_jobs(cluster, list(jobs))
    healthy(cluster, timeout=30 + SLACK)


def test_master_that_dies_on_its_own_is_restarted_and_rejoins(compose_cluster: ComposeCluster) -> None:
    """compose.yaml's fail-stop contract: a master that exits (here SIGKILLed from
    inside its container, not stopped through Docker) comes back by itself."""
    cluster = compose_cluster
    leader, term = healthy(cluster)
    victim = next(i for i in reversed(MASTER_IDS) if i != leader)  # a follower: no election to wait for
    container = cluster.master(victim)
    before = cluster.submit(leader, job_spec("before-the-crash", type="batch", command=["true"]))
    restarts = int(docker("inspect", "--format", "{{.RestartCount}}", container))

    # The master process is the child of docker-init (init: true); its argv is
    # python, then the claud-master script.
    kill = (
        "import os, signal\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
        "    if b'python' in argv[0] and len(argv) > 1 and argv[1].endswith(b'/claud-master'):\n"
        "        os.kill(int(pid), signal.SIGKILL)\n"
    )
    docker("exec", container, "python3", "-c", kill)
    wait_for(lambda: int(docker("inspect", "--format", "{{.RestartCount}}", container)) > restarts,
             10 + SLACK, f"Docker to restart master {victim}")
    cluster.forget_urls()

    def rejoined() -> bool:
        view = cluster.cluster_view(victim)
        return (view["leader_id"] is not None and view["term"] >= term
                and cluster.request(victim, "GET", f"/v1/jobs/{before['id']}").status_code == 200)

    wait_for(rejoined, 30 + SLACK, f"master {victim}, restarted, to rejoin with the job written before its crash")
    assert cluster.running(container)
    healthy(cluster, timeout=30 + SLACK)


ESCAPE_PROBE = r"""
say() { echo "probe $*"; }
found=""
for p in /var/run/docker.sock /run/docker.sock /proc/*/root/var/run/docker.sock /proc/*/root/run/docker.sock; do
    [ -e "$p" ] && found="$found $p"
done
[ -n "$found" ] && say "docker-socket: FOUND$found" || say "docker-socket: none"
found=""
for p in /run/claud/secret /proc/*/root/run/claud/secret /proc/*/root/data/cluster-secret; do
    [ -e "$p" ] && found="$found $p" && cat "$p" 2>/dev/null
done
[ -n "$found" ] && say "secret-file: FOUND$found" || say "secret-file: none"
cat /proc/*/environ 2>/dev/null | tr '\0' '\n' | grep -i -e SECRET -e CLAUD_ \
    && say "secret-env: FOUND" || say "secret-env: none"
say "processes: $(ls /proc | grep -c '^[0-9]')"
gateway=$(ip route | awk '/^default/ {print $3}')
for m in $MASTERS; do
    m=$(echo "$m" | sed "s/^gateway:/$gateway:/")
    # busybox's wget crashes in this image (static glibc); nc speaks HTTP well enough.
    out=$(printf 'POST /v1/internal/propose HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}' \
          | nc -w 3 "${m%:*}" "${m##*:}" 2>&1)
    case "$out" in
        "HTTP/1."[01]" 2"*) say "internal $m: ACCEPTED $(echo "$out" | head -1)";;
        HTTP/*) say "internal $m: refused $(echo "$out" | head -1 | cut -c1-40)";;
        *) say "internal $m: unreachable ($(echo "$out" | tail -1))";;
    esac
done
"""


def test_a_job_reaches_no_docker_socket_no_secret_and_no_internal_route(compose_cluster: ComposeCluster) -> None:
    cluster = compose_cluster
    leader, _ = healthy(cluster)
    secret = (cluster.cluster_dir / "secret").read_text().strip()
    # Every way to a master the job might have: names and addresses on the
    # cluster's network, and the host's published ports through the job's gateway.
    targets = []
    for master_id in MASTER_IDS:
        name = cluster.master(master_id)
        address_of = f'{{{{(index .NetworkSettings.Networks "{cluster.network}").IPAddress}}}}'
        ip = docker("inspect", "--format", address_of, name)
        port = cluster.url(master_id).rsplit(":", 1)[1]
        targets += [f"{name}:{API_PORT}", f"{ip}:{API_PORT}", f"gateway:{port}"]

    spec = job_spec("escape", type="batch", command=["sh", "-c", ESCAPE_PROBE], env={"MASTERS": " ".join(targets)})
    job = cluster.submit(leader, spec)
    done = wait_for(lambda: (j := cluster.job(leader, job["id"]))["state"] in ("completed", "failed") and j,
                    60 + 3 * len(targets) * 3, "the probe job to finish")
    output = docker("logs", done["container_id"])
    print(output)
    lines = [line for line in output.splitlines() if line.startswith("probe ")]
    assert done["state"] == "completed", output
    assert "probe docker-socket: none" in lines, output
    assert "probe secret-file: none" in lines, output
    assert "probe secret-env: none" in lines, output
    assert secret not in output, "the job printed the cluster secret"
    # Its own PID namespace: sh, the probe's pipeline, nothing of its slave.
    assert int(next(line for line in lines if line.startswith("probe processes:")).split()[-1]) < 10, output
    internal = [line for line in lines if line.startswith("probe internal ")]
    assert len(internal) == len(targets), output
    assert all(" refused " in line or " unreachable " in line for line in internal), output
