# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Both do their own set-up; every step is idempotent and skips work that is already done.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= python3.11
VENV        := .venv
BIN         := $(VENV)/bin
UV_VERSION  := 0.13.9
LAKEHOUSE_HOME ?= $(CURDIR)/.lakehouse
# test processes of `make test`: each runs its own stack; a test file (a module sharing a lake, or
# test_orchestration.py with everything that needs Airflow) stays on one process (tests/conftest.py).
# 0 runs every test in this process.
TEST_WORKERS ?= 2
SOURCES     := $(LAKEHOUSE_HOME)/sources
VEGA        := vega-datasets-3.2.1
VEGA_SHA256 := 6f72fda460a9863fae5fcb32f85bcd49e1761fdea6dc6cf9f4962472881cc5a3

.PHONY: help setup venv jars class-archive data up down status demo lint bytecode test test-crashes test-unit bench clean-state

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: venv jars class-archive data tools  ## venv with the locked dependencies, Spark jars and their class archive, demo data (idempotent)

# Bytecode: each module is compiled at its first import and kept, as Python does, so only the
# modules in use are compiled (compiling all 17,000 of the environment at install took 48 s of a
# fresh `make demo`). With PYTHONDONTWRITEBYTECODE set (as on this machine) no process keeps what
# it compiles, so every process compiled every module it imported again (importing Great
# Expectations took 27 s instead of 14): then the whole environment is compiled once, at install.
INSTALLED   := $(VENV)/.installed-bytecode
COMPILE     := $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode,)
venv: $(INSTALLED)
$(INSTALLED): requirements/lock.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet $(COMPILE) --python $(BIN)/python requirements/lock.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

jars: jars/lib/.resolved
jars/lib/.resolved: jars/pom.xml scripts/prune_jars.py $(INSTALLED)
	@command -v java >/dev/null || { echo "error: java (17+) not found"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found (it resolves the Delta and S3A jars once)"; exit 1; }
	rm -rf jars/lib
	mvn --quiet --batch-mode -f jars/pom.xml dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
	$(BIN)/python scripts/prune_jars.py jars/lib
	@touch $@

# the driver JVM's class-data archive: Spark, Delta and S3A classes mapped at each start instead of
# loaded one by one (lakehouse/spark.py); made again whenever the jars or the venv change
class-archive: jars/lib/spark-driver.jsa
jars/lib/spark-driver.jsa: jars/lib/.resolved scripts/class_archive.py
	$(BIN)/python scripts/class_archive.py $@

data: $(SOURCES)/$(VEGA)/.fetched
$(SOURCES)/$(VEGA)/.fetched:
	@command -v npm >/dev/null || { echo "error: npm not found (it fetches vega-datasets)"; exit 1; }
	mkdir -p $(SOURCES)/$(VEGA)
	cd $(SOURCES) && npm pack --silent vega-datasets@3.2.1 >/dev/null
	echo "$(VEGA_SHA256)  $(SOURCES)/$(VEGA).tgz" | sha256sum --check --quiet
	tar -xzf $(SOURCES)/$(VEGA).tgz -C $(SOURCES)/$(VEGA) --strip-components=1 package/data/flights-3m.parquet package/data/airports.csv
	rm -f $(SOURCES)/$(VEGA).tgz
	@touch $@

up: setup  ## start the local services (S3 server, MLflow, Airflow) on 127.0.0.1
	$(BIN)/lakehouse up

down:  ## stop the local services
	@if [ -x $(BIN)/lakehouse ]; then $(BIN)/lakehouse down; fi

status:  ## show the services and their health
	$(BIN)/lakehouse status

# The demo's set-up leaves out the class-data archive of `setup`: writing it takes about a minute, and
# the demo starts two driver JVMs, each a few seconds faster with it. `make test` and `make bench`
# write it (or `make class-archive`), and every later JVM maps it.
demo: venv jars data tools  ## the main job: start services, land the real data, ingest it, build every quarter through Airflow
	$(BIN)/lakehouse up
	$(BIN)/lakehouse land
	$(BIN)/lakehouse ingest
	$(BIN)/lakehouse backfill --all
	$(BIN)/lakehouse tables
	$(BIN)/lakehouse builds

lint: venv  ## ruff (lint and format check) and mypy over the source; `make test` runs it first
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The test run starts hundreds of processes that import Great Expectations, MLflow, Airflow and
# PySpark. In a venv installed without bytecode (PYTHONDONTWRITEBYTECODE unset), the first processes
# to import a module each compiled it, several at once: a fresh clone's tests took 736 s, the same
# tests again 658 s. Compiled once before they start, in parallel (48 s of CPU per fresh install;
# 4 s when the install compiled them already).
COMPILED := $(VENV)/.compiled-bytecode
bytecode: $(COMPILED)
$(COMPILED): $(INSTALLED)
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
	@touch $@

test: setup lint bytecode  ## lint, then every test on TEST_WORKERS processes (each starts its own services in a temporary folder)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-crashes: setup  ## the build task SIGKILLed at silver's and gold's write points and retried (a cold Spark process per kill: not in make test)
	$(BIN)/python -m pytest -m crashes tests/integration/test_crashes.py $(PYTEST_ARGS)

test-unit: setup  ## only the unit tests
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: setup  ## fresh lake, DuckDB reference vs CLI build vs one-month increment vs Airflow (BENCH_ARGS="--parts cli")
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean-state: down  ## stop the services and delete all local data (.lakehouse)
	rm -rf $(LAKEHOUSE_HOME)

# Further targets (docker-compose checks, docs) live in make/*.mk.
-include make/*.mk
