# Quick start:  make demo   (install + run the example study)
#               make test   (install + run the whole test suite)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint test-oldest-optuna dashboard bench bench-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins torch's CPU wheel: never a multi-GB CUDA build by accident.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/hpo run examples/digits-mlp.yaml --storage sqlite:///demo.db --name digits-mlp-$$(date +%Y%m%d-%H%M%S)

# Two processes (pytest-xdist), each test file in one of them (module fixtures are built once):
# most of the suite waits on Ray, subprocesses and sleeps in trials.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: install
	$(BIN)/ruff check hpo workers tests benchmarks alembic
	$(BIN)/mypy

# Optuna's storage contract and the differential test of the owned storage on the oldest Optuna
# pyproject.toml allows (the newest runs the whole suite, those included): a small second environment.
OLDEST_OPTUNA ?= 5.0.0
test-oldest-optuna:
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install --quiet -c constraints.txt "optuna==$(OLDEST_OPTUNA)" sqlalchemy pytest
	.venv-oldest/bin/python -m pip install --quiet --no-deps -e .
	.venv-oldest/bin/python -m pytest --noconftest -p no:cacheprovider -q \
		tests/store/test_owned_storage_contract.py tests/store/test_owned_storage_differential.py

dashboard: install
	$(BIN)/hpo dashboard --storage sqlite:///demo.db

bench: install
	$(BIN)/python benchmarks/example_run.py --repeat 3
	$(BIN)/python benchmarks/sampler_quality.py --seeds 10
	$(BIN)/python benchmarks/compare.py --out benchmarks/results
	$(BIN)/python benchmarks/work.py benchmarks/results/results.json
	$(BIN)/python benchmarks/one_slot.py --seeds 3

bench-smoke: install
	out=$$(mktemp -d) && $(BIN)/python benchmarks/compare.py --smoke --out $$out && \
		$(BIN)/python benchmarks/work.py $$out/results.json
	$(BIN)/python benchmarks/pooled.py
	$(BIN)/python benchmarks/one_slot.py --smoke

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm
