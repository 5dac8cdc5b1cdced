#!/usr/bin/env bash
# A scenario to watch on the compose cluster (make cluster-up first; `make
# cluster-demo` does both):
#   1. submit service jobs and see where they run;
#   2. `docker stop` the slave running them: the masters declare it dead and
#      the jobs run elsewhere;
#   3. `docker stop` the leader: the two others elect a new one;
#   4. `docker start` both again: they rejoin, the master as a follower that
#      catches up (the lowest id then takes the lead back by a clean transfer).
# The cluster stays up afterwards (make cluster-down removes it).
# Environment: COMPOSE_PROJECT_NAME (claud), CLAUD_CLUSTER_DIR (.build/cluster),
# DEMO_JOBS (3), DEMO_PAUSE (seconds between acts, 2).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
project="${COMPOSE_PROJECT_NAME:-claud}"
cluster_dir="${CLAUD_CLUSTER_DIR:-$here/.build/cluster}"
jobs_n="${DEMO_JOBS:-3}"
pause="${DEMO_PAUSE:-2}"
bin="$here/.venv/bin"
if [ ! -x "$bin/claud" ]; then
    echo "cluster-demo.sh: $bin/claud is missing (make venv)" >&2
    exit 1
fi
if [ ! -s "$cluster_dir/token" ] || ! docker inspect "$project-master1" >/dev/null 2>&1; then
    echo "cluster-demo.sh: the cluster '$project' is not up (make cluster-up)" >&2
    exit 1
fi
CLAUD_MASTERS="$(COMPOSE_PROJECT_NAME="$project" CLAUD_CLUSTER_DIR="$cluster_dir" bash deploy/cluster.sh masters)"
CLAUD_TOKEN_FILE="$cluster_dir/token"
export CLAUD_MASTERS CLAUD_TOKEN_FILE
unset CLAUD_TOKEN
# A cluster started with TLS (make cluster-up TLS=1) is trusted through its CA.
case "$CLAUD_MASTERS" in https://*) export CLAUD_CACERT="$cluster_dir/tls/claud-agent-ca.pem" ;; esac
claud() { "$bin/claud" "$@"; }
py() { "$bin/python" -c "$@"; }

bold() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
act_pause() { sleep "$pause"; }  # for the reader only; every wait below polls a condition

# wait_for SECONDS WHAT COMMAND... (polls COMMAND until it succeeds)
wait_for() {
    local limit="$1" what="$2"; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out after ${limit}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

# Show the jobs table every 2 s while waiting for COMMAND to succeed.
watch_until() {  # watch_until SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what="$2" t0=$SECONDS; shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out waiting for $what" >&2
            return 1
        fi
        printf '\033[2m-- t+%ss, waiting for %s\033[0m\n' "$((SECONDS - t0))" "$what"
        claud jobs 2>/dev/null | sed -n '1,12p' || true
        sleep 2
    done
    printf '\033[1m-- %s after %ss\033[0m\n' "$what" "$((SECONDS - t0))"
}

leader_id() { claud --output json cluster | py 'import json,sys; v=json.load(sys.stdin); assert v["leader_id"] is not None; print(v["leader_id"])'; }
# Our jobs' states and nodes as "id state node" lines.
job_rows() {
    claud --output json jobs | py "
import json, sys
ids = set('$*'.split())
for j in json.load(sys.stdin):
    if j['id'] in ids:
        print(j['id'], j['state'], j.get('node_id') or '-')"
}
all_running() { [ "$(job_rows "$@" | awk '$2 == "running"' | wc -l)" = "$#" ]; }
all_running_off() {  # all_running_off NODE JOB...
    local node="$1"; shift
    [ "$(job_rows "$@" | awk -v n="$node" '$2 == "running" && $3 != n' | wc -l)" = "$#" ]
}
slave_state() {  # slave_state ID -> alive|suspect|dead|...
    claud --output json nodes | py "
import json, sys
for n in json.load(sys.stdin):
    if n['id'] == '$1' and n['role'] == 'slave':
        print(n['state'])"
}
slave_is() { [ "$(slave_state "$1")" = "$2" ]; }
masters_agree_on() {  # every master is reachable and one leads
    claud --output json cluster | py "
import json, sys
v = json.load(sys.stdin)
assert v['leader_id'] is not None and len(v['masters']) == 3 and all(m['reachable'] for m in v['masters'])"
}
# Slave ids are <prefix>s<N>; their containers are <project>-slave<N>.
slave_container() { echo "$project-slave${1##*s}"; }

bold "the cluster: 3 masters found each other by UDP broadcast and elected the lowest id"
run claud cluster
run claud nodes

bold "1. submitting $jobs_n service jobs (they run until stopped)"
ids=()
for i in $(seq 1 "$jobs_n"); do
    id=$(claud run --name "demo-$i" --type service --image claud/busybox:latest --cpu 0.25 --memory-mb 32 \
        -- sh -c 'trap "exit 0" TERM; echo "demo job on $(hostname)"; while true; do sleep 1; done')
    echo "submitted demo-$i: $id"
    ids+=("$id")
done
watch_until 60 "all $jobs_n jobs running" all_running "${ids[@]}"
run claud jobs
# The slave with most of them (binpack puts them together).
victim=$(job_rows "${ids[@]}" | awk '{ print $3 }' | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')
victim_container=$(slave_container "$victim")
run docker ps --filter "label=claud.slave=$victim" --filter "label=claud.compose=$project" \
    --format 'table {{.Names}}\t{{.Status}}\t{{.Label "claud.job"}}'
act_pause

bold "2. machine failure: docker stop $victim_container (slave $victim)"
run docker stop -t 1 "$victim_container"
echo "the masters mark $victim suspect, then dead (--node-dead-after), and place its jobs elsewhere"
watch_until 90 "the jobs running on other slaves" all_running_off "$victim" "${ids[@]}"
run claud jobs
run claud nodes
echo "containers of $victim on the engine (a stopped machine runs nothing):"
run docker ps -a --filter "label=claud.slave=$victim" --filter "label=claud.compose=$project" \
    --format 'table {{.Names}}\t{{.Status}}'
act_pause

bold "3. the leader fails"
old_leader=$(leader_id)
run claud cluster
run docker stop -t 1 "$project-master$old_leader"
t0=$SECONDS
new_leader() { local l; l=$(leader_id) && [ "$l" != "$old_leader" ]; }
wait_for 60 "a new leader" new_leader
echo "master $(leader_id) leads after $((SECONDS - t0))s"
run claud cluster
echo "writes still work (a quorum of 2 is up):"
run claud run --name after-failover --image claud/busybox:latest --cpu 0.1 --memory-mb 16 --wait -- sh -c 'echo written after the failover'
act_pause

bold "4. both come back: docker start $project-master$old_leader $victim_container"
run docker start "$project-master$old_leader" "$victim_container"
wait_for 90 "all 3 masters reachable" masters_agree_on
wait_for 90 "slave $victim alive" slave_is "$victim" alive
run claud cluster
run claud nodes
run claud jobs

bold "done: stopping the demo's jobs; the cluster keeps running"
for id in "${ids[@]}"; do claud stop "$id" >/dev/null || true; done
echo "  more faults to try: deploy/COMPOSE.md (e.g. docker network disconnect $project-net $project-master1)"
echo "  remove everything: make cluster-down"
