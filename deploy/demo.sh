#!/usr/bin/env bash
# A local CLAUD cluster on loopback: one master, two slaves, real Docker jobs.
#   deploy/demo.sh up     start it, run three sample jobs, leave it running
#   deploy/demo.sh down   stop it and remove its containers
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
demo="$here/.demo"
bin="$here/.venv/bin"
master_port="${CLAUD_DEMO_PORT:-8700}"
export CLAUD_MASTERS="http://127.0.0.1:$master_port"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
json_field() { "$bin/python" -c "import json,sys; print(json.load(sys.stdin)$1)"; }

down() {
    if [ -f "$demo/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$demo/pids"
        while read -r pid; do
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        done < "$demo/pids"
        rm -f "$demo/pids"
    fi
    # Slaves leave their containers running on purpose (they adopt them on restart); the demo is over.
    for slave in demo-s1 demo-s2; do
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

up() {
    down
    rm -rf "$demo" && (umask 077; mkdir -p "$demo")
    say "starting master 1 on 127.0.0.1:$master_port"
    "$bin/claud-master" --id 1 --listen "127.0.0.1:$master_port" --data-dir "$demo/m1" --no-discovery \
        >"$demo/master-1.log" 2>&1 &
    echo $! >>"$demo/pids"
    wait_for 20 "the master" curl -sf "http://127.0.0.1:$master_port/readyz"
    # A lone master generates its API token and cluster secret (0600, in its data
    # directory); the CLI reads the token from its file, the slaves get the secret.
    export CLAUD_TOKEN_FILE="$demo/m1/token"
    unset CLAUD_TOKEN
    secret="$demo/m1/cluster-secret"

    say "starting slaves demo-s1 (zone=a) and demo-s2 (zone=b)"
    "$bin/claud-slave" --id demo-s1 --listen 127.0.0.1:8701 --masters "127.0.0.1:$master_port" \
        --labels zone=a --no-discovery --cluster-secret-file "$secret" >"$demo/slave-s1.log" 2>&1 &
    echo $! >>"$demo/pids"
    "$bin/claud-slave" --id demo-s2 --listen 127.0.0.1:8711 --masters "127.0.0.1:$master_port" \
        --labels zone=b --no-discovery --cluster-secret-file "$secret" >"$demo/slave-s2.log" 2>&1 &
    echo $! >>"$demo/pids"
    slaves_alive() {
        [ "$("$bin/claud" --output json nodes | "$bin/python" -c \
            'import json,sys; print(sum(n["role"]=="slave" and n["state"]=="alive" for n in json.load(sys.stdin)))')" = 2 ]
    }
    wait_for 20 "two slaves" slaves_alive
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

    say "claud jobs"
    "$bin/claud" jobs
    say "claud job $bad"
    "$bin/claud" job "$bad"
    say "claud logs $ok"
    "$bin/claud" logs "$ok"

    cat >&2 <<EOF

The cluster is still running (logs in .demo/). Try:
  export CLAUD_MASTERS=$CLAUD_MASTERS CLAUD_TOKEN_FILE=.demo/m1/token
  .venv/bin/claud jobs        .venv/bin/claud nodes        .venv/bin/claud cluster
  API docs: http://127.0.0.1:$master_port/docs
  dashboard: http://127.0.0.1:$master_port/ui (it asks for the token: the contents of .demo/m1/token)
Stop it with: make down
EOF
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
