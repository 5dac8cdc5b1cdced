# CLAUD — the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv image lint test test-tools unit integration demo demo-faults down bench clean

$(STAMP): pyproject.toml client/pyproject.toml daemon/pyproject.toml master/pyproject.toml slave/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e 'client[cli]' -e daemon -e master -e slave -e '.[test]'
	touch $@

venv: $(STAMP)

# The jobs' test image only (seconds); `images` below builds it too.
image:
	bash deploy/build-busybox-image.sh

# ruff, then mypy on the packages (strict; settings in pyproject.toml). Seconds
# once mypy's cache is warm, so `test` runs it first.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# Every image a test needs is built here, before pytest: the compose tests only
# check that theirs exist, as a cold build (minutes) would not fit a test timeout.
# The pure-logic tests (CPU-bound hypothesis runs, no sockets, no Docker) on both
# cores; the process tests one at a time, as their timing bounds assume an
# otherwise idle machine.
test: venv lint images test-tools
	$(BIN)/pytest -q -n 2 tests/unit $(PYTEST_ARGS)
	$(BIN)/pytest -q --ignore=tests/unit $(PYTEST_ARGS)

# Headless Chromium for the dashboard tests, from Debian's packages when missing.
test-tools:
	bash deploy/install-test-tools.sh

unit: venv
	$(BIN)/pytest -q -n 2 tests/unit $(PYTEST_ARGS)

integration: venv image
	$(BIN)/pytest -q tests/integration $(PYTEST_ARGS)

demo: venv image
	bash deploy/demo.sh up

# A guided tour of failures on the demo cluster, narrated, ending with `claud verify`.
demo-faults: demo
	bash deploy/demo-faults.sh

down:
	bash deploy/demo.sh down

bench: venv image
	$(BIN)/python bench/latency.py

clean: down
	rm -rf $(VENV) .build .demo

# --- the compose demo cluster (compose.yaml): 3 masters, 3 slaves in containers
.PHONY: images cluster-up cluster-down cluster-demo

# claud/master, claud/slave (and claud/busybox), offline when no registry answers;
# seconds when nothing changed. After the venv: the images' dependencies are
# pinned to the versions it runs.
images: venv
	bash deploy/build-images.sh

# TLS=1: every master and slave serves HTTPS with its own certificate (compose.tls.yaml);
# TLS=0 plain HTTP; unset: as the cluster already running, else plain HTTP.
TLS ?=
cluster-up: venv images
	SKIP_BUILD=1 CLAUD_TLS=$(TLS) bash deploy/cluster.sh up

cluster-down:
	bash deploy/cluster.sh down

cluster-demo: cluster-up
	bash deploy/cluster-demo.sh
