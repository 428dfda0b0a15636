# PRD Inspect: the commands README.md shows. Each target can be run again: it only does what is missing.
#
#   make serve    venv (service only, no torch) → check the default bundle → python -m service on :8000
#   make test     venv with torch (CPU build) and every extra → the whole test suite
#
# Variables: VENV (default .venv), PYTHON (interpreter that creates it), TORCH_SPEC, PYTEST_ARGS, DATA, RUN, and
# the service's own PRD_* settings (PRD_MODEL_STORE, PRD_MODEL_NAME, PRD_MODEL_VERSION, PRD_PORT, ...).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The CPU build lies on this project's machines; elsewhere add an index for a CPU-only wheel via PIP_TORCH_ARGS.
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
PYTEST_ARGS ?=

DATA ?= ../shared/data
RUN ?= runs/demo
ABLATION ?= runs/ablation
TRAIN_ARGS ?=
EXPORT_ARGS ?=
BENCH_ARGS ?=

# The service reads these itself; exported so the bundle check and the service agree.
export PRD_MODEL_STORE ?= model_store
export PRD_MODEL_NAME ?= prd
export PRD_MODEL_VERSION ?= latest

SERVE_STAMP := $(VENV)/.prd-serve-installed
DEV_STAMP := $(VENV)/.prd-dev-installed

.PHONY: help serve check-bundle test lint train eval ablate export bench ci

help:
	@echo "PRD Inspect"
	@echo "  make serve        install the service (no torch) and serve the default bundle on :8000"
	@echo "  make test         install $(TORCH_SPEC) + all extras and run the test suite"
	@echo "  make lint         ruff check and ruff format --check"
	@echo "  make train        python -m training fit --data $(DATA) --out $(RUN)"
	@echo "  make eval         python -m training evaluate $(RUN) --data $(DATA) --report $(RUN)/eval"
	@echo "  make ablate       python -m training ablate --data $(DATA) --out $(ABLATION)"
	@echo "  make export       python -m training export $(RUN) --store $(PRD_MODEL_STORE) --name $(PRD_MODEL_NAME)"
	@echo "  make bench        python -m service.bench (raw ONNX Runtime vs the service vs no batching)"
	@echo "  make ci           bash .ci/run (what CI runs, from a clean clone)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Service only: the HTTP layer + onnxruntime (CPU). Re-installs when pyproject.toml changes.
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[serve]'
	@touch $@

# Development: torch first (pinned, CPU build here), then training, service and test dependencies.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install $(PIP_TORCH_ARGS) '$(TORCH_SPEC)'
	$(PIP) install -e '.[train,serve,dev]'
	@touch $@ $(SERVE_STAMP)

check-bundle: $(SERVE_STAMP)
	$(BIN)/python docker/check_bundle.py

serve: check-bundle
	exec $(BIN)/python -m service

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

train: $(DEV_STAMP)
	$(BIN)/python -m training fit --data $(DATA) --out $(RUN) $(TRAIN_ARGS)

eval: $(DEV_STAMP)
	$(BIN)/python -m training evaluate $(RUN) --data $(DATA) --report $(RUN)/eval

ablate: $(DEV_STAMP)
	$(BIN)/python -m training ablate --data $(DATA) --out $(ABLATION)

export: $(DEV_STAMP)
	$(BIN)/python -m training export $(RUN) --store $(PRD_MODEL_STORE) --name $(PRD_MODEL_NAME) $(EXPORT_ARGS)

bench: check-bundle
	$(BIN)/python -m service.bench --store $(PRD_MODEL_STORE) --name $(PRD_MODEL_NAME) --version $(PRD_MODEL_VERSION) \
		$(BENCH_ARGS)

ci:
	bash .ci/run
