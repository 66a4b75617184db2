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
# runs of a grid at once (demo, bench-al), one core each
JOBS ?= 2

SMOKE_FLAG := $(if $(filter 1,$(SMOKE)),--smoke,)
RUNS ?= runs
# paper experiment → grid file (experiments/<grid>.yaml)
PAPERS := wacv24-nyud:wacv24_nyud wacv24-pascal:wacv24_pascal wacv24-tab1:wacv24_tab1 \
	wacv24-fig7a:wacv24_fig7a wacv24-fig7b:wacv24_fig7b partal-nyud:partal_nyud \
	partal-pascal:partal_pascal iccvw23-nuimages:iccvw23_nuimages iccvw23-a9:iccvw23_a9 \
	iccvw23-procedural:iccvw23_procedural mtpsl-nyuv2:mtpsl_nyuv2 mtpsl-cityscapes:mtpsl_cityscapes \
	mtpsl-pascal:mtpsl_pascal mtpsl-al:mtpsl_al
PAPER_TARGETS := $(foreach p,$(PAPERS),paper-$(word 1,$(subst :, ,$(p))))

.PHONY: install demo test lint format clean bench bench-al papers-smoke $(PAPER_TARGETS)

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m mtal.demo --jobs $(JOBS)

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -p no:cacheprovider

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
	$(BIN)/python benchmarks/bench_scoring.py

# `make bench-al`: the label-efficiency benchmark (experiments/bench_al.yaml), resumable;
# report in $(RUNS)/bench-al/report, copied to docs/bench_al/. SMOKE=1: its tiny version.
bench-al: install
	$(BIN)/python -m mtal.bench_al $(SMOKE_FLAG) --jobs $(JOBS) --runs-dir $(if $(filter 1,$(SMOKE)),$(RUNS)/smoke,$(RUNS))

# `make paper-<name>` runs one paper's grid (resumable); SMOKE=1 runs it on tiny
# procedural fixtures in minutes.
$(PAPER_TARGETS): paper-%: install
	$(BIN)/mtal experiment experiments/$(subst -,_,$*).yaml $(SMOKE_FLAG) --runs-dir $(RUNS) --jobs $(JOBS) --report

papers-smoke: install
	$(MAKE) $(PAPER_TARGETS) SMOKE=1 RUNS=$(RUNS)/smoke

clean:
	rm -rf $(VENV) *.egg-info src/*.egg-info .pytest_cache .ruff_cache
