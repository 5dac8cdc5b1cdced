# Sourced by deploy/demo.sh and deploy/demo-faults.sh: where the demo cluster is,
# spelled once. CLAUD_DEMO_DIR, CLAUD_DEMO_PORT and CLAUD_DEMO_NAME (the slaves'
# id prefix) let a second demo run beside the first (the test of the scripts does).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo="${CLAUD_DEMO_DIR:-$here/.demo}"
bin="$here/.venv/bin"
name="${CLAUD_DEMO_NAME:-demo}"
port="${CLAUD_DEMO_PORT:-8700}"
slave_port=$((port + 1))
master_ips=(127.0.0.11 127.0.0.12 127.0.0.13)
slave_ips=(127.0.0.21 127.0.0.22 127.0.0.23)
masters_list=""
for ip in "${master_ips[@]}"; do masters_list="${masters_list:+$masters_list,}$ip:$port"; done
export CLAUD_MASTERS="$masters_list"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
