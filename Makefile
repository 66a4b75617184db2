# mtal — the two commands: `make demo` and `make test` (both set everything up).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_SILENT := true
SMOKE ?= 0

.PHONY: install demo test lint format clean bench paper-wacv24-nyud paper-wacv24-pascal \
	paper-partal-nyud paper-partal-pascal paper-synthetic

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m mtal.demo

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_synthetic.py
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_search.py

clean:
	rm -rf $(VENV) *.egg-info src/*.egg-info .pytest_cache .ruff_cache
