# Thin wrappers around the README's commands.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench reliability install

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
	$(PY) bench/run.py

reliability: install
	rm -f .receiver/faults.jsonl && mkdir -p .receiver
	FAULT_REPORT=.receiver/faults.jsonl $(VENV)/bin/pytest -m fault
	$(PY) bench/reliability_table.py .receiver/faults.jsonl
