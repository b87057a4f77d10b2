# Entry points. `make test` and `make demo` do all set-up on a fresh clone (scripts/setup_env.sh).
SHELL := /bin/bash
VENV ?= $(if $(filter jazzy,$(ROS_DISTRO)),.venv-jazzy,.venv)
PY := $(VENV)/bin/python

.PHONY: setup demo test robot-path lint format constraints clean

setup:
	@VENV=$(abspath $(VENV)) scripts/setup_env.sh

## The main job on an embedded default: synthetic data -> training -> bag -> live node -> report.
demo: setup
	@VENV=$(abspath $(VENV)) scripts/demo.sh

## Lint (ruff), the whole test suite, the robot path (a colcon build of a fresh copy whose
## installed executables do real work, and `colcon test`), then the node, bag and package tests
## on ROS 2 Jazzy (scripts/test_all.sh). ROS tests run in a private network namespace.
test: setup lint
	@scripts/test_all.sh $(VENV)

robot-path: setup
	@scripts/check_robot_path.sh $(VENV)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

## Re-pin everything requirements/*.txt pull in, from the current .venv.
constraints: setup
	@[ -z "$(filter-out kilted,$(ROS_DISTRO))" ] || { echo "make constraints: pins come from the Kilted venv (ROS_DISTRO=$(ROS_DISTRO) given)" >&2; exit 2; }
	@{ echo "# Pins for everything requirements/*.txt pull in, from 'pip freeze' of a working .venv."; \
	  echo "# Regenerate with: make constraints. torch is pinned in runtime-pip.txt only (CPU or CUDA build)."; \
	  $(PY) -m pip freeze --exclude-editable 2>/dev/null | grep -v -i -E '^(torch|vision.msgs|mtl.perception)[=_-]'; \
	} > requirements/constraints.txt

clean:
	rm -rf $(VENV) .venv-jazzy build install log .pytest_cache .ruff_cache data/demo data/demo_val_bag runs/demo
