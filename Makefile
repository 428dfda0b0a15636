# PRD Inspect: the commands README.md shows. Each target can be run again: it only does what is missing.
#
#   make serve    venv (service only, no torch) → check the default bundle → python -m service on :8000
#   make test     venv with torch (CPU build) and every extra → the whole test suite
#   make lock     regenerate requirements/*.txt (pinned, with hashes) from pyproject.toml; everything installs them
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
export PRD_MODEL_STORE ?= model_store/repository
export PRD_MODEL_NAME ?= prd
export PRD_MODEL_VERSION ?= latest

# Locked dependencies (exact versions + sha256, linux x86_64, Python 3.11), one file per use; `make lock` writes them.
LOCKS := requirements
PIP_LOCKED := $(PIP) install --no-deps --require-hashes
UV_VERSION ?= 0.13.9
LOCK_ARGS ?=

SERVE_STAMP := $(VENV)/.prd-serve-installed
DEV_STAMP := $(VENV)/.prd-dev-installed

.PHONY: help serve check-bundle bundle test lint lock train eval ablate export bench ci image-base image-cpu image-gpu

help:
	@echo "PRD Inspect"
	@echo "  make serve        install the service (no torch) and serve the default bundle on :8000"
	@echo "  make test         install $(TORCH_SPEC) + all extras and run the test suite"
	@echo "  make bundle VERSION=N  restore released bundle version N from git history into $(PRD_MODEL_STORE)"
	@echo "  make lint         ruff check and ruff format --check"
	@echo "  make lock         regenerate requirements/*.txt (pins + hashes) from pyproject.toml (LOCK_ARGS=--upgrade)"
	@echo "  make train        python -m training fit --data $(DATA) --out $(RUN)"
	@echo "  make eval         python -m training evaluate $(RUN) --data $(DATA) --report $(RUN)/eval"
	@echo "  make ablate       python -m training ablate --data $(DATA) --out $(ABLATION)"
	@echo "  make export       python -m training export $(RUN) --store $(PRD_MODEL_STORE) --name $(PRD_MODEL_NAME)"
	@echo "  make bench        python -m service.bench (raw ONNX Runtime vs the service vs no batching)"
	@echo "  make image-cpu    docker build the CPU scorer image (prd-inspect/scorer:cpu); image-gpu: the GPU one"
	@echo "  make image-base   python:3.11-slim from a Debian mirror, for hosts with no image registry (docs/containers.md)"
	@echo "  make ci           bash .ci/run (what CI runs, from a clean clone)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Service only: the HTTP layer + onnxruntime (CPU), from the lock. Re-installs when the lock changes.
$(SERVE_STAMP): $(LOCKS)/serve.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) -r $(LOCKS)/serve.txt
	$(PIP) install --no-deps -e .
	@touch $@

# Development: torch first (pinned, CPU build here), then training, service and test dependencies from the lock.
$(DEV_STAMP): $(LOCKS)/dev.txt pyproject.toml | $(BIN)/python
	$(PIP) install $(PIP_TORCH_ARGS) '$(TORCH_SPEC)'
	$(PIP_LOCKED) -r $(LOCKS)/dev.txt
	$(PIP) install --no-deps -e .
	@touch $@ $(SERVE_STAMP)

# The locks: serve (CPU image, make serve), gpu (GPU image), ci-serve (CI's torch-free venv), train (training image)
# and dev (make test). torch itself is installed apart (TORCH_SPEC) and left out of the locks; its CPU build, found
# through pip's find-links, is what the locks resolve torch's own dependencies against.
# uv keeps the versions already in a lock unless LOCK_ARGS=--upgrade (or --upgrade-package NAME) says otherwise.
LOCK_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock' $(LOCK_ARGS)
lock: | $(BIN)/python
	$(PIP) install --quiet 'uv==$(UV_VERSION)'
	$(LOCK_COMPILE) --extra serve -o $(LOCKS)/serve.txt
	$(LOCK_COMPILE) --extra gpu -o $(LOCKS)/gpu.txt
	$(LOCK_COMPILE) --extra serve --extra dev -o $(LOCKS)/ci-serve.txt
	echo '$(TORCH_SPEC)+cpu' > $(VENV)/torch-lock-constraint.txt
	for extras in 'train:--extra train' 'dev:--extra train --extra serve --extra dev'; do \
		$(LOCK_COMPILE) $${extras#*:} -c $(VENV)/torch-lock-constraint.txt --no-emit-package torch \
			$$($(PIP) config get global.find-links 2>/dev/null | sed 's/^/--find-links /') -o $(LOCKS)/$${extras%%:*}.txt; \
	done

check-bundle: $(SERVE_STAMP)
	$(BIN)/python docker/check_bundle.py

# An earlier released bundle, byte for byte, from git history (only the default bundle is in the working tree).
bundle: $(SERVE_STAMP)
	@test -n "$(VERSION)" || { echo "usage: make bundle VERSION=N (released: $$($(BIN)/python -m model_store.releases list))" >&2; exit 2; }
	$(BIN)/python -m model_store.releases restore $(VERSION) --name $(PRD_MODEL_NAME) --repository $(PRD_MODEL_STORE)

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

# Images (docs/containers.md). image-base only builds what is missing: the registry's python:3.11-slim when it can be
# pulled, else the air-gapped one from a Debian mirror (root, debootstrap).
image-base:
	docker image inspect python:3.11-slim >/dev/null 2>&1 || docker pull python:3.11-slim || bash docker/base/build.sh python

image-cpu: image-base
	docker build -f docker/Dockerfile.cpu -t prd-inspect/scorer:cpu .

image-gpu: image-base
	docker build -f docker/Dockerfile.gpu -t prd-inspect/scorer:gpu .

ci:
	bash .ci/run
