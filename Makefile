# whatmatters: two commands do all set-up on a fresh machine.
#   make test   creates .venv, installs everything pinned (also Ray and colcon), runs the whole test suite
#   make demo   creates .venv, installs what the stack runs with, runs the main job
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: all install test demo bench clean

all: test

# ROS 2: where ROS is installed and sourced, the new venv already imports its rclpy (through
# the sourced PYTHONPATH); then that rclpy is used and the PyPI wheels of requirements-ros.txt
# are not installed; elsewhere they are. The check runs with the venv's own python, so an
# rclpy that only another activated venv has does not count.

# Two stages: what the stack runs with (RUN_STAMP: enough for make demo), then what only the tests
# need on top (STAMP: Ray, colcon, an independent MCAP reader).
$(RUN_STAMP): requirements.lock requirements-nodeps.txt requirements-ros.txt src/whatmatters/setup.py src/whatmatters_ros/setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements.lock
	# comma-deps-acados (acados 0.2.x) writes a vendored casadi over casadi's files:
	# reinstall the pinned PyPI casadi so that it wins.
	$(PY) -m pip install --quiet --force-reinstall --no-deps "$$(grep -E '^casadi==' requirements.lock)"
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e src/whatmatters
	@if $(PY) -c 'import rclpy' >/dev/null 2>&1; then \
		echo "ROS 2 found (ROS_DISTRO=$$ROS_DISTRO): using its rclpy, not installing requirements-ros.txt"; \
	else \
		echo "$(PY) -m pip install --quiet -r requirements-ros.txt"; \
		$(PY) -m pip install --quiet -r requirements-ros.txt; \
	fi
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e src/whatmatters_ros
	$(PY) -c "import rclpy, whatmatters_ros.nodes.mpc_controller; print('ROS 2 ready: rclpy from', rclpy.__file__)"
	$(PY) -c "import whatmatters, mujoco, casadi, torch; from whatmatters.mpc.acados_env import import_acados_template as i; i(); print('whatmatters environment ready: torch', torch.__version__, 'mujoco', mujoco.__version__, 'casadi', casadi.__version__)"
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) requirements-ray.txt requirements-build.txt requirements-test.txt
	# Ray: the optional cluster engine ('whatmatters[ray]'), installed so that its tests run
	$(PY) -m pip install --quiet -r requirements-ray.txt
	# colcon (builds the ROS 2 workspace; the tests check its installed layout)
	$(PY) -m pip install --quiet -r requirements-build.txt
	# an independent MCAP reader for the tests of the recorded bags
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The main job end to end through the ROS 2 graph (docs/ros.md, "make demo"): lock-step episodes with
# the base model on training environments -> bags with S_hat -> trainer nodes (stand, then ours) ->
# reload_model on the running MPC -> base, stand and ours on 3 evaluation environments; table and figure.
demo: $(RUN_STAMP)
	$(VENV)/bin/whatmatters_demo

bench: $(STAMP)
	$(VENV)/bin/whatmatters bench --json

clean:
	rm -rf $(VENV) .cache
