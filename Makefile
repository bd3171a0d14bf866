# Two commands do everything on a fresh machine with only python3:
#   make reports   bootstrap .venv, build demo data if missing, run every notebook into reports/
#   make test      bootstrap .venv, lint, unit tests, every notebook through nbval
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo
DEMO_CUSTOMERS ?= 5000
DEMO_SEED ?= 42
# Figures must be drawn with a non-interactive backend that renders: unset any inherited
# MPLBACKEND (Agg set in the environment silently produced zero figures in executed notebooks).
unexport MPLBACKEND
export PYTHONHASHSEED := 0
# Progress bars (cxanalysis.progress) go to stderr in the terminal; nbval compares stderr of
# pinned cells and reports must hold results only, so test runs switch them off.
TEST_ENV := CX_PROGRESS=0

.PHONY: all reports test lint unit nbval bench lab demo clean distclean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev]'
	@touch $(STAMP)

# Built when missing, and rebuilt when the generator changes, so that pinned notebook outputs
# are never checked against a stale world.
$(DEMO)/customers.parquet: src/cxanalysis/synth.py | $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/cxanalysis synth --customers $(DEMO_CUSTOMERS) --seed $(DEMO_SEED) --out $(DEMO) --quiet

demo: $(DEMO)/customers.parquet

reports: $(STAMP) demo
	$(BIN)/cxanalysis report --source $(DEMO) --out reports

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks

unit: $(STAMP) demo
	$(TEST_ENV) $(BIN)/pytest -q tests

nbval: $(STAMP) demo
	cd notebooks && $(TEST_ENV) ../$(BIN)/pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env *.ipynb

test: lint unit nbval

# make bench [BENCH="synth funnel"]: all benchmarks, or the ones named.
# The anchors (chDB, tea-tasting) are the bench extra: installed here, never by make test.
bench: $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,bench]'
	$(BIN)/python -m benchmarks $(BENCH)

lab: $(STAMP) demo
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf reports/* .pytest_cache

distclean: clean
	rm -rf $(VENV) $(DEMO)
