# Retracer: `make demo` starts the app on the bundled sample data; `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: demo test test-fast lint format data venv dev clean-venv chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,bench,peers,ray,figures]"
	touch $@ $(STAMP)

venv: $(STAMP)
dev: $(STAMP_DEV)

demo: $(STAMP)
	$(BIN)/python -m engine.sample_data --check
	$(BIN)/python -m app.launch --server.address 127.0.0.1 --server.fileWatcherType none --browser.gatherUsageStats false

chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = "0" ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium; e2e tests will be skipped"; \
	else echo "chromium is missing: run 'sudo apt-get install chromium' for the browser tests"; fi

test: $(STAMP_DEV) chromium
	$(BIN)/python -m pytest -q

test-fast: $(STAMP_DEV)
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine

format: $(STAMP_DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "fashion-mnist is already in /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "run: sudo apt-get install dataset-fashion-mnist"; fi

clean-venv:
	rm -rf $(VENV)
