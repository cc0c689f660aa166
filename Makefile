# Two commands matter: `make local` (start the platform) and `make test` (install, run all tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install local status env down purge test test-fast lint format schema smoke check clean bench bench-scale bench-replica drills docs

SCANNERS := .venv-scanners
SCANNERS_STAMP := $(SCANNERS)/.installed

install: $(STAMP) $(SCANNERS_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# checkov and parliament in their own virtualenv: checkov pins a boto3 the platform cannot use.
$(SCANNERS_STAMP): scanners/requirements.txt
	$(PYTHON) -m venv $(SCANNERS)
	$(SCANNERS)/bin/pip install --quiet --upgrade pip
	$(SCANNERS)/bin/pip install --quiet -r scanners/requirements.txt
	@touch $(SCANNERS_STAMP)

local: install            ## start (or heal) the local platform and print how to reach it
	$(BIN)/mlflow-platform local up

status: install
	$(BIN)/mlflow-platform local status

env: install
	@$(BIN)/mlflow-platform local env

down: install
	$(BIN)/mlflow-platform local down

purge: install            ## stop and delete all local data
	$(BIN)/mlflow-platform local down --purge

test: install             ## every test; starts and stops its own platform on free ports
	$(BIN)/pytest

test-fast: install        ## the tests that start no server and run no scanner (seconds)
	$(BIN)/pytest -m "not platform and not slow"

lint: install             ## ruff lint + format check (also part of make test)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install           ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

schema: install           ## regenerate stacks/stack.schema.json from the config model
	$(BIN)/python -m mlflow_platform.schema

smoke: install            ## the smoke suite against MLFLOW_TRACKING_URI (+ credentials)
	$(BIN)/pytest smoke_tests

check: install            ## validate every stack file for deploy (an example missing its secret fails, by design)
	@failed=""; for stack in dev staging prod; do $(BIN)/mlflow-platform config check $$stack >/dev/null \
	  && echo "$$stack: valid" || failed="$$failed $$stack"; done; test -z "$$failed" || { echo "not deployable:$$failed"; exit 1; }

clean:
	-$(BIN)/mlflow-platform local down --purge
	rm -rf $(VENV) $(SCANNERS) *.egg-info src/*.egg-info

drills: install           ## fault drills against a throwaway local platform: kill, heal, check every byte (~2 min)
	$(BIN)/python -m benchmarks.fault_drills

bench: install            ## load benchmark: stock vs the guide's command vs the rendered config (~9 min), then its charts
	$(BIN)/python -m benchmarks.tracking_load
	$(BIN)/python docs/pictures.py charts

bench-scale: install      ## MLflow at 1M runs / 100M metric rows, before and after `db tune` (~1.5 h, ~40 GB in /tmp), then its chart
	$(BIN)/python -m benchmarks.data_scale --json benchmarks/results/data_scale_1m.json
	$(BIN)/python docs/pictures.py scale

bench-replica: install    ## searches and the UI at 1M runs, 8 and 32 clients, reading the primary vs a read replica (~45 min; empties the bench-scale state's metric history)
	$(BIN)/python -m benchmarks.read_replica --state /tmp/mlflow-platform-scale --drop-history

docs: install             ## regenerate the docs' configuration reference and pictures (needs chromium, graphviz)
	$(BIN)/python -m mlflow_platform.docs --write
	$(BIN)/python docs/pictures.py
