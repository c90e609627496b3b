# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
# Each bootstraps .venv from the pyproject files; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= conf/mmstream.toml
BACKEND_PYPROJECTS := $(wildcard backends/*/pyproject.toml)
TEST_PLUGINS := $(wildcard tests/plugins/*/pyproject.toml)
DISTS := -e . $(foreach p,$(BACKEND_PYPROJECTS),-e $(dir $(p)))
LINT_PATHS := mmstream $(patsubst %/__init__.py,%,$(wildcard backends/*/mmstream_*/__init__.py tests/plugins/*/mmstream_*/__init__.py))
PYTEST_ARGS ?=
# The editable installs leave our own packages without bytecode, and with
# PYTHONDONTWRITEBYTECODE set every start compiles them again, keeping the garbage in the
# server's heap (docs/fanout.md, "Memory per listener"). Compile them as an install would;
# commands that start a server refresh what changed since.
BYTECODE := $(BIN)/python -m compileall -q mmstream $(dir $(wildcard backends/*/mmstream_*/__init__.py))

.PHONY: serve test lint check unit bench bench-quick bench-fanout bench-scaleout bench-tier soak cluster clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The runtime install: core and built-in backends.
$(VENV)/.runtime: $(BIN)/python pyproject.toml $(BACKEND_PYPROJECTS)
	$(BIN)/pip install -q $(DISTS)
	$(BYTECODE)
	touch $@

# The test install adds test tools and the example third-party plugin(s).
$(VENV)/.test: $(VENV)/.runtime $(TEST_PLUGINS)
	$(BIN)/pip install -q -e '.[test]' $(foreach p,$(TEST_PLUGINS),-e $(dir $(p)))
	touch $@

# The bench install adds the Redis client (the naive peer) and py-spy (profiles).
$(VENV)/.bench: $(VENV)/.runtime pyproject.toml
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

serve: $(VENV)/.runtime
	$(BYTECODE)
	$(BIN)/mmstream serve --config $(CONFIG)

lint: $(VENV)/.test
	$(BIN)/ruff check mmstream backends tests bench
	$(BIN)/ruff format --check mmstream backends tests bench
	$(BIN)/mypy $(LINT_PATHS)

unit: $(VENV)/.test
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint unit

# The long variants of the reliability tests (more crash rounds, fuzz sequences and
# connections); prints the figures table that docs/reliability.md records.
soak: $(VENV)/.test
	MMSTREAM_SOAK=1 $(BIN)/pytest tests/reliability tests/streams/test_streams_ids.py tests/media/test_varnish_llhls.py -q $(PYTEST_ARGS)

# Benchmarks (docs/performance.md): not part of `make test`, no wall-clock assertions anywhere.
bench: $(VENV)/.bench
	$(BIN)/python -m bench --write-doc $(BENCH_ARGS)

bench-quick: $(VENV)/.bench
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# Scale-out figures: ingest through HAProxy with 1 and 2 workers, CPU from /proc (docs/scaling.md).
bench-scaleout: $(VENV)/.runtime
	$(BIN)/python bench/scaleout.py --json bench/results/scaleout.json

# Demo: HAProxy on 127.0.0.1:8080 in front of 3 workers on 127.0.0.1:9001-9003, Icecast
# sources (ffmpeg, Liquidsoap, MPD, ices2) on 127.0.0.1:8000, in the foreground; Ctrl-C
# stops everything. Needs haproxy (apt-get install haproxy).
CLUSTER_DIR ?= cache/cluster
cluster: $(VENV)/.runtime
	$(BYTECODE)
	$(BIN)/mmstream serve --config $(CONFIG) --workers 3 --host 127.0.0.1 --port 9001 \
		--cache-dir $(CLUSTER_DIR) --haproxy 127.0.0.1:8080 --haproxy-sources 127.0.0.1:8000 \
		--log-level WARNING

# One live stream, 100/1,000/5,000 listeners, mmstream beside Debian's icecast2 (if installed).
FANOUT_ARGS ?=
# Object-storage tier figures against moto's S3 server (docs/performance.md, docs/tiering.md).
bench-tier: $(VENV)/.test
	$(BIN)/python bench/tier.py $(TIER_ARGS)

bench-fanout: $(VENV)/.runtime
	$(BYTECODE)
	$(BIN)/python bench/fanout.py $(FANOUT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
