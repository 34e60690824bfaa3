# Two commands on a fresh machine: `make demo` and `make check`. Each builds .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo check test test-unit test-integration lint types clean bench bench-held chaos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# The benchmark at its default size (a million triggers; long). Options in BENCH_ARGS, e.g.
# make bench BENCH_ARGS='--quick --json bench.json --plot bench.png'
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# A million held messages: release lateness, and the throughput before and while holding
# them. Options in BENCH_ARGS, e.g. make bench-held BENCH_ARGS='--held 100000'
bench-held: $(BENCH_STAMP)
	$(BIN)/python -m bench.held_run $(BENCH_ARGS)

# Options in ARGS, e.g. make demo ARGS=--serve (the page stays up until Ctrl-C)
demo: $(STAMP)
	$(BIN)/smscool demo $(ARGS)

# What CI runs (.ci/run): the linter, the type checker, then every test.
check: lint types test

test: $(STAMP)
	$(BIN)/python -m pytest

# Kills, rebalances and a reference model; default size 100,000 triggers. Options in ARGS,
# e.g. make chaos ARGS='--quick --seed 7'
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/agents

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check streams connectors schemas smscool tests bench

# mypy's settings (the packages it checks) are in pyproject.toml.
types: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
