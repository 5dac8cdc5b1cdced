#!/usr/bin/env bash
# Wheels of claud-client, claud-daemon, claud-master and claud-slave plus every dependency
# (CPython 3.11, manylinux x86_64) in .build/wheels, so that the image builds
# install with `pip install --no-index --find-links` and need no network.
# pip's own wheel is there too: the images run pip from it and keep no pip.
#
#   .build/wheels/claud/   the four CLAUD wheels (change with every edit)
#   .build/wheels/deps/    everything else, and requirements-{master,slave}.txt
#                          (the images install these in an earlier, cached layer)
#
# Fast when nothing changed: the CLAUD wheels are rebuilt only when their
# sources change, the dependencies are downloaded again only when a
# pyproject.toml changes (FORCE=1 redoes both). This runs on the host, which
# may use PyPI; the Docker builds never do.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/.build/wheels"
claud_out="$out/claud"
deps_out="$out/deps"
src="$here/.build/wheel-src"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi
pip=("$PYTHON" -m pip --disable-pip-version-check --no-input -q)
# The images' interpreter: Debian bookworm's (glibc 2.36) or python:3.11-slim's.
target=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none
        --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64
        --platform manylinux2014_x86_64 --platform any)

mkdir -p "$claud_out" "$deps_out"
exec 9>"$here/.build/wheels.lock"
flock 9

dists=(client daemon master slave)
digest() { (cd "$here" && find "$@" -type f -not -name '*.pyc' -not -path '*/__pycache__/*' \
    -not -path '*.egg-info/*' -not -path '*/.mypy_cache/*' -not -path '*/build/*' -not -path '*/dist/*' -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64); }

# --- the four CLAUD distributions, built from a copy (never writes into the source tree)
src_digest="$(digest "${dists[@]}")"
if [ "${FORCE:-0}" = 1 ] || [ "$(cat "$out/.claud-src.sha256" 2>/dev/null)" != "$src_digest" ] \
   || ! ls "$claud_out"/claud_master-*.whl "$claud_out"/claud_slave-*.whl "$claud_out"/claud_client-*.whl \
           "$claud_out"/claud_daemon-*.whl >/dev/null 2>&1; then
    rm -rf "$src" && mkdir -p "$src"
    for d in "${dists[@]}"; do
        tar -C "$here" -c --exclude='__pycache__' --exclude='*.egg-info' --exclude='.mypy_cache' \
            --exclude='build' --exclude='dist' "$d" | tar -C "$src" -x
    done
    rm -f "$claud_out"/*.whl
    "${pip[@]}" wheel --no-deps -w "$claud_out" "$src/client" "$src/daemon" "$src/master" "$src/slave"
    rm -rf "$src"
    echo "$src_digest" >"$out/.claud-src.sha256"
    echo "built $(cd "$claud_out" && ls ./*.whl | sed 's|^./||' | tr '\n' ' ')"
fi

# --- their dependencies (and pip), for the images' Python, at the versions the
# development venv runs (so the images run what the tests ran), else the newest.
constraints="$here/.build/wheel-constraints.txt"
: >"$constraints"
if [ -x "$here/.venv/bin/python" ]; then
    "$here/.venv/bin/python" -m pip --disable-pip-version-check list --format=freeze --exclude-editable 2>/dev/null \
        | grep -E '^[A-Za-z0-9_.-]+==' | grep -viE '^(claud[-_]|pip==|setuptools==|wheel==)' >"$constraints" || true
fi
deps_digest="$( (cat "$here"/{client,daemon,master,slave}/pyproject.toml "$constraints"; printf '%s\n' "${target[@]}") | sha256sum | cut -c1-64)"
if [ "${FORCE:-0}" = 1 ] || [ "$(cat "$out/.deps.sha256" 2>/dev/null)" != "$deps_digest" ]; then
    rm -f "$deps_out"/*.whl
    # The direct requirements of each image, from the pyproject files.
    "$PYTHON" - "$here" "$deps_out" <<'PY'
import sys, tomllib
from pathlib import Path
root, out = Path(sys.argv[1]), Path(sys.argv[2])
def deps(dist, extra=None):
    project = tomllib.loads((root / dist / "pyproject.toml").read_text())["project"]
    reqs = project.get("optional-dependencies", {})[extra] if extra else project.get("dependencies", [])
    return [r for r in reqs if not r.replace("_", "-").lower().startswith("claud-")]
for image in ("master", "slave"):
    # The images carry the `claud` command too (claud-client's cli extra).
    reqs = dict.fromkeys(deps("client") + deps("client", "cli") + deps("daemon") + deps(image))
    (out / f"requirements-{image}.txt").write_text("".join(f"{r}\n" for r in reqs))
PY
    # pip resolves claud-* from the wheels above and everything else from the index.
    "${pip[@]}" download -d "$deps_out" --find-links "$claud_out" "${target[@]}" -c "$constraints" \
        'claud-client[cli]' claud-daemon claud-master claud-slave pip
    rm -f "$deps_out"/claud_*.whl
    echo "$deps_digest" >"$out/.deps.sha256"
    echo "downloaded $(ls "$deps_out"/*.whl | wc -l) wheels into ${deps_out#"$here"/}"
fi

# Every requirement must be satisfiable offline, or the image build would fail late and obscurely.
if [ "$(cat "$out/.checked" 2>/dev/null)" != "$src_digest $deps_digest" ]; then
    "${pip[@]}" download -d "$here/.build/wheel-check" --no-index --find-links "$claud_out" \
        --find-links "$deps_out" "${target[@]}" -c "$constraints" \
        'claud-client[cli]' claud-daemon claud-master claud-slave pip
    rm -rf "$here/.build/wheel-check"
    echo "$src_digest $deps_digest" >"$out/.checked"
fi
echo "wheels ready in ${out#"$here"/}"
