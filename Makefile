# router: developer entry points. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON      ?= python3
VENV        ?= .venv
CONFIG      ?= config/example.yaml
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
IMAGE       ?= localhost/router:dev
export IMAGE

STAMP := $(VENV)/.installed

.PHONY: help venv run test lint schema bench image image-test clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'
	@echo "  variables: VENV=$(VENV) CONFIG=$(CONFIG) PYTEST_ARGS=... TEST_WORKERS=$(TEST_WORKERS) IMAGE=$(IMAGE)"

# The virtualenv is (re)installed when pyproject.toml changes.
$(STAMP): pyproject.toml
	@v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || v="not a working Python"; \
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: router needs Python >= 3.11, got $(PYTHON) = $$v; install python3.11 or more recent," \
	       "or name it: make PYTHON=python3.11 ..." >&2; exit 1; }
	@[ -x $(VENV)/bin/python ] || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(STAMP) ## create or update the virtualenv (.venv)

run: $(STAMP) ## run the router with CONFIG (default config/example.yaml)
	$(VENV)/bin/router run --config $(CONFIG)

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to a process: most tests wait on
# real processes and sockets, so two workers take ~0.6x the time of one on two cores. TEST_WORKERS=0 runs
# it in this process (e.g. for a debugger or `-s`).
test: $(STAMP) ## run the test suite (TEST_WORKERS=2 processes; PYTEST_ARGS=... to pass options)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy and the layers contract (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check router tests
	$(VENV)/bin/mypy router
	$(VENV)/bin/lint-imports

schema: $(STAMP) ## regenerate config/schema.json
	$(VENV)/bin/router schema > config/schema.json.tmp
	mv config/schema.json.tmp config/schema.json

bench: $(STAMP) ## run the benchmarks (bench/run.py)
	$(VENV)/bin/python bench/run.py

image: ## build the container image with podman (IMAGE=localhost/router:dev)
	scripts/image-build.sh

image-test: ## run the image and check health, metrics and a clean SIGTERM stop
	scripts/image-test.sh

clean: ## remove caches and build output (keeps .venv and var/)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache config/schema.json.tmp
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name '*.egg-info' \) -print0 \
	  | xargs -0 rm -rf
