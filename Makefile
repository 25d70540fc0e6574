# Two commands do all set-up on a fresh machine: `make run` (the service) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint services

install: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU wheel from this machine's disk.
# npm ci: three.js (the web page's 3D viewer) and Swagger UI (/docs), exactly as
# web/package-lock.json pins them; --ignore-scripts: no package's install script runs (one of
# Swagger UI's dependencies would phone home).
$(STAMP): pyproject.toml client/pyproject.toml web/package-lock.json
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet -e './client[mesh,audio]'
	npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(PY) -m api

services:
	scripts/ensure-services.sh

test: lint services
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench $(ARGS)

lint: install
	$(PY) -m ruff check model api service worker bench tests client
	$(PY) -m mypy model service worker api
