#!/usr/bin/env bash
# A local CLAUD cluster on loopback: three masters (a real election, a replicated
# log), three slaves, real Docker jobs. Each process has its own loopback address,
# as the tests give them: masters 127.0.0.11-13, slaves 127.0.0.21-23. Every process
# runs with --demo-faults (`claud chaos` breaks it on purpose) under a restart loop.
#   deploy/demo.sh up     start it, run sample jobs, leave it running
#   deploy/demo.sh down   stop it and remove its containers
# CLAUD_DEMO_DIR, CLAUD_DEMO_PORT and CLAUD_DEMO_NAME (the slaves' id prefix) let a
# second one run beside it (the test of this script does).
set -euo pipefail

# shellcheck source=deploy/demo-env.sh
. "$(dirname "$0")/demo-env.sh"
zones=(a b c)

json_field() { "$bin/python" -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# supervise LOG COMMAND...: run COMMAND in the background and again 2 s after each exit,
# as a service manager would (a `claud chaos kill` comes back); the loop's pid goes in
# $demo/pids. A TERM to the loop stops its process, waits for it, and ends the loop.
supervise() {
    local log="$1"; shift
    (
        set +e
        child=""
        trap 'if [ -n "$child" ]; then kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi; exit 0' TERM
        while :; do
            "$@" >>"$log" 2>&1 &
            child=$!
            wait "$child"
            echo "demo.sh: exited with status $?; restarting in 2 s" >>"$log"
            sleep 2 &
            child=$!
            wait "$child"
        done
    ) </dev/null >>"$log" 2>&1 &  # nothing of the caller's: `up` returns with its output closed
    echo $! >>"$demo/pids"
}

down() {
    if [ -f "$demo/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$demo/pids"
        while read -r pid; do
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        done < "$demo/pids"
        rm -f "$demo/pids"
    fi
    # Slaves leave their containers running on purpose (they adopt them on restart); the demo is over.
    for slave in "$name-s1" "$name-s2" "$name-s3"; do
        ids=$(docker ps -aq --filter "label=claud.slave=$slave")
        [ -z "$ids" ] || docker rm -f $ids >/dev/null
    done
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $what (logs in $demo)" >&2; exit 1; fi
        sleep 0.2
    done
}

new_secret() {  # new_secret FILE: 32 random bytes as hex, readable by this user only
    (umask 077; "$bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$1")
}

up() {
    down
    rm -rf "$demo" && (umask 077; mkdir -p "$demo")
    # Three masters share one API token and one cluster secret (masters and slaves
    # present it to each other); a cluster of more than one never makes up its own.
    new_secret "$demo/token"
    new_secret "$demo/cluster-secret"
    export CLAUD_TOKEN_FILE="$demo/token"
    unset CLAUD_TOKEN

    # Spread (not the default binpack): the sample jobs land on different slaves, as a learner
    # breaking one slave wants to see.
    say "starting masters 1-3 on ${master_ips[*]} (port $port): they elect a leader"
    for i in 1 2 3; do
        ip=${master_ips[$((i - 1))]}
        peers=$(echo "$masters_list" | tr ',' '\n' | grep -v "^$ip:" | paste -sd, -)
        supervise "$demo/master-$i.log" "$bin/claud-master" --id "$i" --listen "$ip:$port" --data-dir "$demo/m$i" \
            --no-discovery --peers "$peers" --cluster-size 3 --token-file "$demo/token" \
            --cluster-secret-file "$demo/cluster-secret" --strategy spread --demo-faults
    done
    leader_known() {
        "$bin/claud" --output json cluster | "$bin/python" -c \
            'import json,sys; sys.exit(0 if json.load(sys.stdin)["leader_id"] is not None else 1)'
    }
    wait_for 30 "an elected leader" leader_known

    say "starting slaves $name-s1..3 on ${slave_ips[*]} (zones a, b, c)"
    # They share this machine's engine, so each publishes ports from a range of its own.
    port_ranges=(20000-23999 24000-27999 28000-31999)
    for i in 1 2 3; do
        supervise "$demo/slave-s$i.log" "$bin/claud-slave" --id "$name-s$i" \
            --listen "${slave_ips[$((i - 1))]}:$slave_port" --masters "$masters_list" \
            --port-range "${port_ranges[$((i - 1))]}" \
            --labels "zone=${zones[$((i - 1))]}" --no-discovery --cluster-secret-file "$demo/cluster-secret" \
            --state-dir "$demo/s$i-state" --demo-faults
    done
    slaves_alive() {
        [ "$("$bin/claud" --output json nodes | "$bin/python" -c \
            'import json,sys; print(sum(n["role"]=="slave" and n["state"]=="alive" for n in json.load(sys.stdin)))')" = 3 ]
    }
    wait_for 30 "three slaves" slaves_alive
    say "claud cluster"
    "$bin/claud" cluster
    "$bin/claud" nodes

    say "submitting: one job that completes, one that fails, one too big for any slave"
    ok=$("$bin/claud" --output json run --name hello --image claud/busybox:latest --cpu 0.25 --memory-mb 32 \
        -- sh -c 'echo "hello from CLAUD on $(hostname)"; sleep 2; echo done' | json_field '["id"]')
    bad=$("$bin/claud" --output json run --name oops --image claud/busybox:latest \
        -- sh -c 'echo "about to fail" >&2; exit 3' | json_field '["id"]')
    big=$("$bin/claud" --output json run --name huge --image claud/busybox:latest --cpu 64 --memory-mb 64 \
        -- true | json_field '["id"]')

    say "claud run --wait follows a job to its end (exit code is the job's)"
    "$bin/claud" run --name quick --image claud/busybox:latest --wait -- sh -c 'echo quick job; sleep 1' || true

    settled() {
        "$bin/claud" --output json jobs | "$bin/python" -c "
import json, sys
jobs = {j['id']: j for j in json.load(sys.stdin)}
ok = jobs['$ok']['state'] == 'completed' and jobs['$bad']['state'] == 'failed' and jobs['$big']['pending_reason']
sys.exit(0 if ok else 1)"
    }
    wait_for 60 "the sample jobs to settle" settled

    say "a service of three replicas: busybox httpd, spread over the slaves, each checked over http"
    web_spec() {  # web_spec TEXT [CHECK_PATH]: the web service answering TEXT
        cat <<SPEC
{"name": "web", "image": "claud/busybox:latest", "type": "service", "count": 3,
 "resources": {"cpu": 0.1, "memory_mb": 32}, "stop_timeout": 1,
 "command": ["sh", "-c", "mkdir -p /www && echo $1 > /www/index.html && exec httpd -f -p 8080 -h /www"],
 "ports": [{"name": "http", "container": 8080}],
 "check": {"http": "${2:-/}", "port": "http", "interval": 1, "timeout": 1, "failures": 2},
 "update": {"max_parallel": 1, "min_healthy_time": 2, "healthy_deadline": 20, "auto_revert": true}}
SPEC
    }
    web_spec "hello from version 0" >"$demo/web.json"
    web_spec "hello from version 1" >"$demo/web-v1.json"
    web_spec "never healthy" /missing >"$demo/web-broken.json"
    web=$("$bin/claud" --output json run "$demo/web.json" | json_field '["id"]')
    web_healthy() {
        "$bin/claud" --output json job "$web" | "$bin/python" -c "
import json, sys
allocs = json.load(sys.stdin)['allocations']
sys.exit(0 if len(allocs) == 3 and all(a['health'] == 'healthy' for a in allocs) else 1)"
    }
    wait_for 90 "three healthy replicas of web" web_healthy
    say "claud job $web"
    "$bin/claud" job "$web"
    say "each replica answers on the address claud prints"
    "$bin/claud" --output json job "$web" | "$bin/python" -c "
import json, sys, urllib.request
for a in json.load(sys.stdin)['allocations']:
    address = a['ports'][0]['address']
    print(f'  http://{address}/ ->', urllib.request.urlopen(f'http://{address}/', timeout=5).read().decode().strip())"

    say "claud jobs"
    "$bin/claud" jobs
    say "claud job $bad"
    "$bin/claud" job "$bad"
    say "claud logs $ok"
    "$bin/claud" logs "$ok"

    leader=$("$bin/claud" --output json cluster | json_field '["leader_id"]')
    cat >&2 <<EOF

The cluster is still running (logs in $demo/). Try:
  export CLAUD_MASTERS=$CLAUD_MASTERS CLAUD_TOKEN_FILE=$demo/token
  .venv/bin/claud cluster     .venv/bin/claud jobs         .venv/bin/claud nodes
  .venv/bin/claud events      (job and slave transitions as they happen; Ctrl-C to stop)
  break it on purpose (every process runs with --demo-faults, and comes back 2 s after it dies):
      .venv/bin/claud chaos kill $leader; sleep 3; .venv/bin/claud cluster     the leader crashes; another leads
      .venv/bin/claud chaos partition $leader       cut it off (.venv/bin/claud chaos heal $leader ends it)
      .venv/bin/claud chaos pause $name-s2           frozen for 15 s: its jobs move once it is declared dead
  roll the web service out (one replica at a time, each healthy 2 s before the next):
      .venv/bin/claud job update $web $demo/web-v1.json; .venv/bin/claud job $web
      .venv/bin/claud job update $web $demo/web-broken.json     never healthy: it fails, and reverts by itself
      .venv/bin/claud job history $web     .venv/bin/claud job scale $web 5
  live view: http://${master_ips[0]}:$port/ui (it asks for the token: the contents of $demo/token)
  API docs:  http://${master_ips[0]}:$port/docs
Stop it with: make down
EOF
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
