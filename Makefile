# Entry points. `make test` and `make demo` do all set-up on a fresh clone (scripts/setup_env.sh).
SHELL := /bin/bash
VENV ?= $(if $(filter jazzy,$(ROS_DISTRO)),.venv-jazzy,.venv)
PY := $(VENV)/bin/python

.PHONY: setup demo test lint format constraints clean

setup:
	@VENV=$(abspath $(VENV)) scripts/setup_env.sh

## The main job on an embedded default: synthetic data -> training -> bag -> live node -> report.
demo: setup
	@scripts/demo.sh

## Lint (ruff) and the whole test suite. ROS tests run in a private network namespace (test/conftest.py).
test: setup lint
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

## Re-pin everything requirements/*.txt pull in, from the current .venv.
constraints: setup
	@{ echo "# Pins for everything requirements/*.txt pull in, from 'pip freeze' of a working .venv."; \
	  echo "# Regenerate with: make constraints. torch is pinned in python.txt only (CPU or CUDA build)."; \
	  $(PY) -m pip freeze --exclude-editable 2>/dev/null | grep -v -i -E '^(torch|vision.msgs|mtl.perception)[=_-]'; \
	} > requirements/constraints.txt

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache data/demo data/demo_val_bag runs/demo
