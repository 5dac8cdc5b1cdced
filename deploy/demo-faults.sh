#!/usr/bin/env bash
# `make demo-faults`: a guided tour of what CLAUD does when things break, on the
# cluster `make demo` started (it must be up). Each step says what it does and
# what to watch for in the live view, then waits for the cluster to react:
#   1. kill the leader            -> another master is elected; writes go on
#   2. cut off the slave of a job -> it fences its job; the masters place it again
#   3. pause a follower           -> it falls behind, then catches up
#   4. heal everything, and ask `claud verify` whether any job ran twice or got lost
# Exits with claud verify's code: 0 when no promise was broken.
# CLAUD_DEMO_DIR / CLAUD_DEMO_PORT / CLAUD_DEMO_NAME as for deploy/demo.sh.
set -euo pipefail

# shellcheck source=deploy/demo-env.sh
. "$(dirname "$0")/demo-env.sh"
export CLAUD_TOKEN_FILE="$demo/token"
unset CLAUD_TOKEN

tell() { printf '    %s\n' "$*" >&2; }
py() { "$bin/python" -c "$@"; }
claud() { "$bin/claud" "$@"; }

# field JSON EXPR: a value out of the JSON on stdin (EXPR applies to `d`).
field() { py "import json,sys; d=json.load(sys.stdin); print($1)"; }

# until_true SECONDS WHAT COMMAND...: poll COMMAND until it succeeds, or give up naming WHAT.
until_true() {
    local deadline=$((SECONDS + $1)) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then echo "demo-faults: gave up waiting for $what" >&2; exit 1; fi
        sleep 0.3
    done
}

[ -f "$demo/token" ] || { echo "demo-faults: no demo cluster in $demo: run make demo first" >&2; exit 2; }
claud -o json cluster | field 'd["demo_faults"]' | grep -qx True \
    || { echo "demo-faults: this cluster was not started with --demo-faults" >&2; exit 2; }
started=$(py 'from datetime import datetime, UTC; print(datetime.now(UTC).isoformat())')
acked="$demo/acknowledged.txt"
: >"$acked"

say "The live view: http://${master_ips[0]}:$port/ui (token: the contents of $demo/token)"
leader=$(claud -o json cluster | field 'd["leader_id"]')
tell "master $leader leads."

say "1. Kill the leader (master $leader)"
tell "Watch: the others stop hearing its appends, one of them stands for election in a higher term"
tell "and wins; the killed master restarts 2 s later, catches up and, the lowest id winning, leads again."
claud chaos kill "$leader"
new_leader() {
    claud -o json cluster >"$demo/view.json" \
        && [ "$(field 'd["leader_id"] not in (None, '"$leader"')' <"$demo/view.json")" = True ]
}
until_true 30 "a new leader" new_leader
tell "$(field '"master %s leads now, in term %s." % (d["leader_id"], d["term"])' <"$demo/view.json")"
job=$(claud -o json run --name after-the-election --image claud/busybox:latest --wait -- echo written after the election \
    | field 'd["id"]')
echo "$job" >>"$acked"
tell "a job submitted after the election ran: $job"

say "2. Cut off the slave running a long job"
long=$(claud -o json run --name long --image claud/busybox:latest --cpu 0.5 --memory-mb 32 -- sleep 600 | field 'd["id"]')
echo "$long" >>"$acked"
# Read in the predicate that waits: a master that has just restarted (step 1) may answer
# before it has caught up, and not know the job yet; the next look asks again.
running() { slave=$(claud -o json job "$long" | field 'd["node_id"] if d["state"] == "running" else ""') && [ -n "$slave" ]; }
until_true 60 "job $long to run" running
tell "job $long runs on $slave. Partitioning $slave: it stops hearing the masters, so when its lease"
tell "ends it stops the job itself (fencing), and the masters, which stop hearing it, declare it dead"
tell "and place the job on another slave: never two copies at once."
claud chaos partition "$slave"
moved() {
    now_on=$(claud -o json job "$long" | field 'd["node_id"] if d["state"] == "running" else ""') \
        && [ -n "$now_on" ] && [ "$now_on" != "$slave" ]
}
until_true 90 "job $long to run elsewhere" moved
tell "job $long runs on $now_on now."
claud chaos heal "$slave"
tell "$slave healed: it rejoins and is given work again."

say "3. Pause a follower for 5 s"
# Asked of the leader itself: a master that has just restarted may not know it yet.
leader_says() {
    local at
    at=$(claud -o json cluster | field 'd["leader_address"] or ""')
    [ -n "$at" ] && claud --masters "$at" -o json cluster >"$demo/leader-view.json" \
        && [ "$(field 'd["role"]' <"$demo/leader-view.json")" = leader ]
}
until_true 30 "the leader to answer" leader_says
follower=$(field '[m["id"] for m in d["masters"] if m["id"] != d["master_id"] and m["reachable"]][0]' \
    <"$demo/leader-view.json")
tell "Watch: master $follower stops answering (the leader marks it unreachable), the log goes on"
tell "without it, and once it thaws the leader sends what it missed."
claud chaos pause "$follower" --seconds 5
job=$(claud -o json run --name during-the-pause --image claud/busybox:latest --wait -- echo committed by two of three \
    | field 'd["id"]')
echo "$job" >>"$acked"
target=$(claud -o json cluster | field 'd["commit_index"]')
address=$(claud -o json cluster | field '[m["address"] for m in d["masters"] if m["id"] == '"$follower"'][0]')
caught_up() {  # asked itself: has it applied what was committed while it slept?
    claud --masters "$address" -o json cluster | field 'd["applied_index"] >= '"$target" | grep -qx True
}
until_true 30 "master $follower to catch up" caught_up
tell "master $follower caught up."

say "4. Stop the long job; did the cluster keep its promises?"
claud stop "$long" >/dev/null
stopped() { [ "$(claud -o json job "$long" | field 'd["state"]')" = stopped ]; }
until_true 60 "job $long to stop" stopped
set +e
claud verify --since "$started" --acknowledged "$acked" $(sed 's/^/--job /' "$acked")
code=$?
set -e
if [ $code = 0 ]; then tell "claud verify: no job ran twice, none was lost, none is stuck."; fi
exit $code
