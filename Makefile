# Thin wrappers around the README's commands. Each tool is installed by the target that needs
# it, keyed on its own program, so `make lint` works after the README's test command too.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint format docs docs-serve bench bench-instructions bench-growth bench-feed reliability

$(VENV)/bin/receiver:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e .

$(VENV)/bin/pytest:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[test]'

# The one pinned ruff (setup.cfg's `lint` extra); .ci/run calls `make lint` too.
$(VENV)/bin/ruff:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[lint]'

run: $(VENV)/bin/receiver
	$(VENV)/bin/receiver serve

test: $(VENV)/bin/pytest
	$(VENV)/bin/pytest

lint: $(VENV)/bin/ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/bin/ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The documentation (mkdocs.yml, docs/): mkdocs comes with the `test` extra. --strict fails on a
# broken link or anchor, a page missing from the nav, or a nav entry without its page
# (tests/system/test_docs.py runs the same build). docs-serve: http://127.0.0.1:8001/.
$(VENV)/bin/mkdocs:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[test]'

docs: $(VENV)/bin/mkdocs
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(VENV)/bin/mkdocs
	$(VENV)/bin/mkdocs serve --strict

# The FastAPI peer of `make bench` (bench/peer_fastapi.py), never a dependency of the receiver.
$(VENV)/bin/uvicorn:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[test,bench-peer]'

# Before/after in one run: BEFORE is the git ref to compare the working tree with (empty: none;
# the same commit as HEAD with nothing changed: skipped, saying so); PEER=yes also runs the
# FastAPI peer for the ratio to it (PEER= : not). The database is an embedded PostgreSQL in a
# temporary folder unless BENCH_DATABASE_URL names a server (`make bench
# BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres`): a database is created there
# and dropped at the end. Progress goes to stderr; all it makes under TMPDIR is removed at the
# end, also on failure or Ctrl-C. BENCH_ARGS go to bench/run.py, e.g. a quick run:
# `make bench BENCH_ARGS="--seconds 3 --memory-events 20000"` (python bench/run.py --help).
BEFORE ?= main
PEER ?= yes
BENCH_ARGS ?=
bench: $(VENV)/bin/pytest $(if $(PEER),$(VENV)/bin/uvicorn)
	$(PY) bench/run.py $(if $(BEFORE),--before $(BEFORE)) $(if $(PEER),--peer) $(BENCH_ARGS)

# The handler's instructions per fresh batch (callgrind: the same count whatever the machine's
# load), the working tree against BEFORE; needs valgrind.
bench-instructions: $(VENV)/bin/pytest
	$(PY) bench/instructions.py $(if $(BEFORE),--before $(BEFORE))

# Ingest with 0, 10M and 50M events stored (about an hour, and ~45 GB of disk at 50M: under
# TMPDIR in an embedded PostgreSQL, or on the server BENCH_DATABASE_URL names).
bench-growth: $(VENV)/bin/pytest
	$(PY) bench/growth.py

# Ingest with the change feed's bookkeeping (migration 008) and without, alternated in one run.
bench-feed: $(VENV)/bin/pytest
	$(PY) bench/feed.py

reliability: $(VENV)/bin/pytest
	rm -f .receiver/faults.jsonl && mkdir -p .receiver
	FAULT_REPORT=.receiver/faults.jsonl GREY_SILENCE_SECONDS=60 $(VENV)/bin/pytest -m fault
	$(PY) bench/reliability_table.py .receiver/faults.jsonl
