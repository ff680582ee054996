# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
DB := sample_data/tenure.duckdb
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format bench chromium sample-data

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.txt requirements-nodeps.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $(RUNTIME_STAMP) $@

# The default store: built by the seeded simulator when missing (about half a minute).
$(DB): | $(RUNTIME_STAMP)
	$(PY) -m core generate --db $(DB)

sample-data: $(DB)

run: $(RUNTIME_STAMP) $(DB)
	$(VENV)/bin/streamlit run app.py

# Debian's Chromium drives the browser test (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Two workers (pytest-xdist): the suite is CPU-bound and CI has two cores.
test: $(DEV_STAMP) $(DB) chromium lint
	$(PY) -m pytest -n 2

bench: $(RUNTIME_STAMP)
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_retention.py
