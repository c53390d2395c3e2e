# The commands a newcomer runs: `make demo`, `make test`. Everything goes through uv and the committed uv.lock.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
UV ?= uv
PYTEST_ARGS ?=
PKG ?=
PACKAGES := $(notdir $(wildcard packages/*))
MEMBERS := genblocks $(PACKAGES)

.PHONY: help setup test test-mediapipe test-fast lint format demo bench wheels lock-check clean $(addprefix test-,$(MEMBERS))

help:  ## list the targets
	@grep -E '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup:  ## install uv if missing, then the locked workspace (every member + dev tools)
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen --compile-bytecode

test: setup  ## the whole test suite on CPU (Triton kernels under the interpreter)
	$(UV) run --frozen pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: setup  ## the suite without tests marked slow
	$(UV) run --frozen pytest -n 2 -m "not slow" $(PYTEST_ARGS)

test-genblocks: setup  ## the shared core's tests alone
	$(UV) run --frozen --package genblocks pytest shared $(PYTEST_ARGS)

test-mediapipe:  ## humananim's mediapipe backend on real images, in its own env (mediapipe 0.10.21 pins clash with the lock)
	PYTHONPATH=packages/humananim/src:shared/src $(UV) run --isolated --no-project --python 3.11 \
		--with "mediapipe==0.10.21" --with scikit-image --with scikit-video --with imageio-ffmpeg \
		--with pyyaml --with omegaconf --with pytest \
		pytest packages/humananim/tests/test_mediapipe_backend.py --noconftest -p no:cacheprovider -s -o addopts="" $(PYTEST_ARGS)

test-%: setup  ## one package's tests alone, e.g. make test-coap-optim
	@test -d packages/$* || { echo "no package packages/$* (known: $(PACKAGES))"; exit 2; }
	$(UV) run --frozen --package $* pytest packages/$* $(PYTEST_ARGS)

lint: setup  ## ruff check + ruff format --check + mypy held to its committed baseline (tests/typecheck.py)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen python tests/typecheck.py

format: setup  ## apply ruff's fixes and formatting
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

lock-check:  ## the lock matches every pyproject
	$(UV) lock --check

demo: setup  ## the main job on embedded defaults; outputs under outputs/<package>/
	$(UV) run --frozen python -m benchmarks.demo --out outputs

bench: setup  ## the benchmark matrix (PKG=coap-optim for one package, QUICK=1 for small sizes)
	$(UV) run --frozen python -m benchmarks $(if $(PKG),--package $(PKG)) $(if $(QUICK),--quick)

wheels: setup  ## build every member's wheel, install each alone in a fresh venv, import it and run its smoke check
	$(UV) run --frozen python tests/wheels.py --dist dist $(if $(PKG),--package $(PKG))

clean:  ## remove build and run outputs
	rm -rf dist outputs results .pytest_cache
