# The entry points the README names.  `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLES := tests/data/hftbacktest tests/data/cryptofeed tests/data/cryptofeed_ftx tests/data/cryptofeed_ftx_2021-04 tests/data/cryptofeed_deribit tests/data/nautilus

.PHONY: setup demo demo-ledger test lint bench bench-pipeline clean

$(STAMP): requirements.lock pyproject.toml setup.py $(shell find shared -name '*.pyx')
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

## The main job on the bundled sample captures (real data, see tests/data/PROVENANCE.md).
demo: $(STAMP)
	$(BIN)/retape audit $(SAMPLES) --out retape-out

## The ledger job on a fragment set generated from the real FTX trades in tests/data.
demo-ledger: $(STAMP)
	rm -rf retape-ledger-demo
	$(BIN)/python -m tests.ledger_gen retape-ledger-demo/fragments
	$(BIN)/retape ledger retape-ledger-demo/fragments --out retape-ledger-demo/out

## The whole test suite (real Redis at REDIS_URL or 127.0.0.1:6379 where a test needs one).
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Benchmarks print ratios against a baseline measured in the same run: the engine against a
## plain sortedcontainers rebuild, eight processes sharing one replay source's limit (the most
## requests in any second against the limit, the share of it used), then the pipeline (below).
## Smaller and quicker: make bench-pipeline PIPELINE_ARGS="--size-mb 8 --repeat 1"
PIPELINE_ARGS ?=

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.replay_limit
	$(BIN)/python -m bench.ledger_calibration
	$(BIN)/python -m bench.pipeline $(PIPELINE_ARGS)

## The pipeline only: 2 workers against 1 and against one process (plain and gzip), the
## embedded default's fixed cost, inputs through the broker and Redis memory.
bench-pipeline: $(STAMP)
	$(BIN)/python -m bench.pipeline $(PIPELINE_ARGS)

clean:
	rm -rf retape-out retape-ledger-demo bench/out .pytest_cache .mypy_cache .ruff_cache
