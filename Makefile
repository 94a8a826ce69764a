# make run  - the whole product on http://127.0.0.1:$${PORT:-8000}/ (Ctrl-C stops it)
# make test - the whole test suite against a private PostgreSQL and Redis
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) -m deploy.local run

test: $(VENV)/.dev
	$(PY) -m deploy.local test

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
