# Plain entry points; see README.md.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint format demo clean

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

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
