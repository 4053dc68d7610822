# Plain entry points; see README.md.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-launch test test-fast lint format demo clean

setup:
	bash scripts/setup.sh

# Optional: ros2 launch / ros2 run / colcon in the venv (README: Installing); ROS2_SRC=DIR for
# local checkouts of the ROS 2 sources, else the pinned tags are cloned from GitHub.
setup-launch: setup
	bash scripts/setup_launch.sh

test: setup
	$(PY) -m pytest -q

# the fast loop: every test but those marked slow (over ~10 s each)
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo: setup
	$(PY) -m pvt_mtl_ros.demo

clean:
	rm -rf build install log .pytest_cache .ruff_cache
