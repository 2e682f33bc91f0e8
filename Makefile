# Two commands work on a fresh machine: `make run` and `make test` (each creates .venv when needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test demo lint bench clean

$(VENV)/.run-installed: pyproject.toml setup.py bot/_scan.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml setup.py bot/_scan.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $(VENV)/.run-installed $@

run: $(VENV)/.run-installed
	$(VENV)/bin/paperboy run

demo: $(VENV)/.run-installed
	$(VENV)/bin/paperboy demo

test: $(VENV)/.test-installed
	$(PY) -m pytest -q

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check bot storage adapters tests
	$(VENV)/bin/mypy

bench: $(VENV)/.run-installed
	$(VENV)/bin/paperboy bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
