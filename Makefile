# Quick start:  make demo   (install + run the example study)
#               make test   (install + run the whole test suite)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test dashboard bench bench-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins torch's CPU wheel: never a multi-GB CUDA build by accident.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/hpo run examples/digits-mlp.yaml --storage sqlite:///demo.db --name digits-mlp-$$(date +%Y%m%d-%H%M%S)

test: install
	$(BIN)/python -m pytest --durations=15

dashboard: install
	$(BIN)/hpo dashboard --storage sqlite:///demo.db

bench: install
	$(BIN)/python benchmarks/example_run.py --repeat 3
	$(BIN)/python benchmarks/sampler_quality.py --seeds 10
	$(BIN)/python benchmarks/compare.py --out benchmarks/results

bench-smoke: install
	$(BIN)/python benchmarks/compare.py --smoke --out $$(mktemp -d)

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm
