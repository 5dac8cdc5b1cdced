#!/usr/bin/env bash
# The compose demo cluster (compose.yaml): 3 masters, 3 slaves, in containers.
#   deploy/cluster.sh up      build the images (offline if need be), start, wait for a leader
#   deploy/cluster.sh down    remove containers, network, volumes and the jobs' containers
#   deploy/cluster.sh info    how to reach the API, the docs and the CLI
# Environment: COMPOSE_PROJECT_NAME (default claud), CLAUD_CLUSTER_DIR (token and
# secret, default .build/cluster), SKIP_BUILD=1 (use the images as they are),
# UP_TIMEOUT (seconds to wait for a leader, default 90), CLAUD_TLS=1 (every
# process serves HTTPS with its own certificate from a CA made here, in
# $CLAUD_CLUSTER_DIR/tls: compose.tls.yaml; unset: as the running cluster);
# compose.yaml lists more.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-claud}"
export CLAUD_CLUSTER_DIR="${CLAUD_CLUSTER_DIR:-$here/.build/cluster}"
project="$COMPOSE_PROJECT_NAME"
tls="${CLAUD_TLS:-}"
if [ -z "$tls" ]; then
    # Unset: follow the cluster that runs (so `down`, `info`, `masters` and
    # cluster-demo.sh need not be told again).
    if docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$project-master1" 2>/dev/null \
        | grep -q '^CLAUD_TLS_CERT_FILE='; then tls=1; else tls=0; fi
fi
tls_dir="$CLAUD_CLUSTER_DIR/tls"
files=(-f "$here/compose.yaml")
if [ "$tls" = 1 ]; then files+=(-f "$here/compose.tls.yaml"); scheme=https; else scheme=http; fi

if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose "${files[@]}" -p "$project")
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose "${files[@]}" -p "$project")
else
    echo "cluster.sh: neither docker-compose nor 'docker compose' is installed" >&2
    exit 1
fi
if [ -x "$here/.venv/bin/python" ]; then py="$here/.venv/bin/python"; else py=python3; fi
if [ -x "$here/.venv/bin/claud" ]; then claud="$here/.venv/bin/claud"; else claud=claud; fi

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

secrets() {
    # 0600, owned by the masters' user inside the containers (uid 10001,
    # Dockerfile.master; its group is a system one, so group bits would not do),
    # in a 0700 directory. The slaves run as root and read them anyway; so does
    # root on the host. The API ports are published on loopback only
    # (CLAUD_PUBLISH_HOST).
    (umask 077; mkdir -p "$CLAUD_CLUSTER_DIR")
    chmod 0700 "$CLAUD_CLUSTER_DIR"
    local name mode=0600
    for name in token secret; do
        if [ ! -s "$CLAUD_CLUSTER_DIR/$name" ]; then
            (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CLAUD_CLUSTER_DIR/$name.tmp")
            mv "$CLAUD_CLUSTER_DIR/$name.tmp" "$CLAUD_CLUSTER_DIR/$name"
        fi
        if ! chown 10001 "$CLAUD_CLUSTER_DIR/$name" 2>/dev/null; then
            mode=0644
        fi
    done
    [ "$mode" = 0600 ] || echo "warning: cannot give $CLAUD_CLUSTER_DIR/{token,secret} to uid 10001 (not root?): they stay readable by every local user (0644) so that the masters can read them" >&2
    chmod "$mode" "$CLAUD_CLUSTER_DIR/token" "$CLAUD_CLUSTER_DIR/secret"
}

certificates() {
    # One CA per cluster directory, one certificate per container, made once
    # (`claud tls`, which needs cryptography: `make venv` installs it). Each
    # names the container as the others dial it (<project>-masterN, from
    # --advertise and discovery) and as the host does (127.0.0.1, published port).
    (umask 077; mkdir -p "$tls_dir")
    if [ ! -s "$tls_dir/claud-agent-ca.pem" ]; then
        say "making the cluster's CA and certificates in $tls_dir (claud tls)"
        "$claud" tls ca create --out "$tls_dir/claud-agent-ca" --common-name "CLAUD $project CA"
    fi
    local role i name
    for role in master slave; do
        for i in 1 2 3; do
            name="$role$i"
            [ -s "$tls_dir/$name.pem" ] && continue
            "$claud" tls cert create "--$role" --ca "$tls_dir/claud-agent-ca.pem" --key "$tls_dir/claud-agent-ca-key.pem" \
                --dns "$project-$name" --dns "$name" --out "$tls_dir/$name" 2>/dev/null
        done
    done
    # The masters run as uid 10001 (Dockerfile.master): their keys stay 0600,
    # owned by that uid; through the engine when this user may not chown.
    local keys=() k
    for i in 1 2 3; do keys+=("master$i-key.pem"); done
    if ! (cd "$tls_dir" && chown 10001:10001 "${keys[@]}" 2>/dev/null); then
        docker run --rm --user 0 --entrypoint chown -v "$tls_dir:/tls" "${CLAUD_MASTER_IMAGE:-claud/master:latest}" \
            10001:10001 $(for k in "${keys[@]}"; do echo "/tls/$k"; done)
    fi
}

# The host address of master N's API (from Docker, so random ports work too).
api_address() {
    local hp
    hp="$(docker port "$project-master$1" 8700/tcp 2>/dev/null | head -n 1)" || return 1
    [ -n "$hp" ] || return 1
    hp="${hp/0.0.0.0:/127.0.0.1:}"
    echo "$hp"
}

masters_urls() {
    local i urls=() a
    for i in 1 2 3; do
        if a="$(api_address "$i")"; then urls+=("$scheme://$a"); fi
    done
    (IFS=,; echo "${urls[*]}")
}

# The CA the host trusts the masters by, when TLS is on; else nothing.
ca_file() {
    if [ "$tls" = 1 ]; then echo "$tls_dir/claud-agent-ca.pem"; fi
}

# The CLI on the masters of this cluster, with its token (and its CA when TLS is
# on), JSON out, giving up on a master after a second: callers poll.
claud_json() {
    local ca=()
    if [ "$tls" = 1 ]; then ca=(--ca-cert "$(ca_file)"); fi
    "$claud" --token-file "$CLAUD_CLUSTER_DIR/token" "${ca[@]}" --failover-timeout 1 --output json "$@"
}

# Prints "leader_id term" once a master names a leader; else status 1. Each
# master in turn: the first to answer may not know the leader yet when another does.
leader() {
    local url view
    for url in $(masters_urls | tr , ' '); do
        view="$(claud_json --masters "$url" cluster)" || continue
        "$py" -c '
import json, sys
view = json.loads(sys.argv[1])
if view["leader_id"] is None:
    sys.exit(1)
print(view["leader_id"], view["term"])' "$view" && return 0
    done
    return 1
}

# How many slaves the masters count alive.
slaves_alive() {
    local nodes
    nodes="$(claud_json --masters "$(masters_urls)" nodes)" || return 1
    "$py" -c '
import json, sys
print(sum(n["role"] == "slave" and n["state"] == "alive" for n in json.loads(sys.argv[1])))' "$nodes"
}

info() {
    local urls first token_file cacert=""
    urls="$(masters_urls)"
    first="${urls%%,*}"
    token_file="$CLAUD_CLUSTER_DIR/token"
    [ "$token_file" = "$here/.build/cluster/token" ] && token_file=".build/cluster/token"
    if [ "$tls" = 1 ]; then cacert=" CLAUD_CACERT=$(ca_file)"; fi
    cat <<EOF

CLAUD cluster "$project" is up: 3 masters, 3 slaves (docker ps --filter label=com.docker.compose.project=$project)
  API        $urls   (Authorization: Bearer \$(cat $token_file))
  API docs   $first/docs
  dashboard  $first/ui   (it asks for the token: the contents of $token_file)
  CLI        export CLAUD_MASTERS=$urls CLAUD_TOKEN_FILE=$token_file$cacert
             .venv/bin/claud cluster; .venv/bin/claud nodes
             .venv/bin/claud run --image claud/busybox:latest --cpu 0.25 --memory-mb 32 --wait -- sh -c 'echo hi'
  logs       docker logs -f $project-master1     (or docker-compose -p $project logs -f)
  faults     docker stop $project-slave1; docker network disconnect $project-net $project-master1
  demo       make cluster-demo          stop: make cluster-down
EOF
}

up() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        say "building images (deploy/build-images.sh)"
        bash deploy/build-images.sh
    fi
    secrets
    if [ "$tls" = 1 ]; then certificates; fi
    local what=compose.yaml
    if [ "$tls" = 1 ]; then what="compose.yaml + compose.tls.yaml: TLS, CA $tls_dir/claud-agent-ca.pem"; fi
    say "starting project $project ($what)"
    "${compose[@]}" up -d --no-build --remove-orphans
    say "waiting for a leader"
    local deadline=$((SECONDS + ${UP_TIMEOUT:-90})) got=""
    until got="$(leader 2>/dev/null)"; do
        if [ $SECONDS -ge $deadline ]; then
            echo "no leader after ${UP_TIMEOUT:-90}s; the masters' logs end with:" >&2
            for i in 1 2 3; do docker logs --tail 15 "$project-master$i" 2>&1 | sed "s/^/  master$i | /" >&2; done
            exit 1
        fi
        sleep 0.5
    done
    set -- $got
    say "master $1 leads (term $2)"
    local n=0
    deadline=$((SECONDS + 30))
    until n="$(slaves_alive 2>/dev/null)" && [ "$n" = 3 ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "warning: ${n:-0} of 3 slaves are alive after 30s (docker logs $project-slave1)" >&2
            break
        fi
        sleep 0.5
    done
    info
}

down() {
    say "removing project $project: containers, network, volumes"
    # Slaves first is not enough: the masters would have them start their jobs
    # again. Everything stops, then the jobs' containers go.
    "${compose[@]}" down --volumes --remove-orphans --timeout 5 || true
    # The jobs' containers: labelled claud.compose=<project> by the slaves; and
    # those labelled claud.slave=<one of our slave ids> that belong to no other
    # compose project (left by a slave started without the label).
    local ids prefix="${CLAUD_SLAVE_ID_PREFIX:-}" s
    ids="$(docker ps -aq --filter "label=claud.compose=$project")"
    for s in s1 s2 s3; do
        ids="$ids $(docker ps -a --filter "label=claud.slave=$prefix$s" --format '{{.ID}} {{.Label "claud.compose"}}' \
            | awk -v p="$project" '$2 == "" || $2 == p { print $1 }')"
    done
    ids="$(echo $ids | tr ' ' '\n' | sort -u | tr '\n' ' ')"
    if [ -n "${ids// /}" ]; then
        say "removing the jobs' containers: $(echo $ids | wc -w)"
        docker rm -f $ids >/dev/null
    fi
    docker network rm "$project-net" >/dev/null 2>&1 || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    info) info ;;
    masters) masters_urls ;;     # the masters' API URLs on this host, comma separated
    leader) leader ;;            # "<leader id> <term>", or status 1
    *) echo "usage: $0 up|down|info|masters|leader" >&2; exit 2 ;;
esac
