# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs medaug, runs the main job on the phantom cohort
#   make test   creates .venv, installs medaug + dev tools, runs lint, types, the import
#               layering (lint-imports) and tests
#
# torch is installed first, pinned, so that pip resolves medaug's `torch>=2.4` against
# it and pulls no CUDA wheels on a CPU machine. Override TORCH for another build, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.medaug-installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/medaug demo

lint: $(STAMP)
	$(BIN)/ruff check medaug tests benchmarks examples
	$(BIN)/ruff format --check medaug tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

test: lint
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_io.py
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) medaug-demo .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info
