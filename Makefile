# Everything runs in .venv, created on first use with only python3 on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test lint type pytest demo bench docs clean

test: lint type pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.test-installed: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	touch $@

$(VENV)/.demo-installed: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[demo]"
	touch $@

$(VENV)/.bench-installed: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]"
	touch $@

# make bench ARGS="--smoke": options for `python -m benchmarks`; writes benchmarks/results.md.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks $(ARGS)

$(VENV)/.docs-installed: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[docs]"
	touch $@

# make demo ARGS="--workers 32": options for `piggy-auth demo`.
demo: $(VENV)/.demo-installed
	$(BIN)/piggy-auth demo $(ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

type: $(VENV)/.test-installed
	$(BIN)/mypy

# Two worker processes (pytest-xdist), one per core of the machines we run on.
pytest: $(VENV)/.test-installed
	.ci/install-redis-server
	$(BIN)/pytest -n 2

# The documentation site, warnings as errors: open docs/_build/html/index.html.
docs: $(VENV)/.docs-installed
	$(BIN)/sphinx-build -W --keep-going -E -a -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .tox docs/_build build *.egg-info .coverage .mypy_cache .pytest_cache .ruff_cache
