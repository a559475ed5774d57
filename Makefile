# Thin wrappers around the README's commands.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench install

$(VENV)/bin/pytest:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[dev]'

install: $(VENV)/bin/pytest

run: install
	$(VENV)/bin/receiver serve

test: install
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check receiver

bench: install
	$(PY) -m bench
