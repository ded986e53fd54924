# The two commands of the README:
#   make run   install everything and serve the app on http://127.0.0.1:8000 (embedded defaults)
#   make test  install what the tests need and run the suite twice:
#              SQLite + in-memory channel layer, then PostgreSQL + Redis
# Also: make test-quick  the suite once on SQLite, without building the local model
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
PYTEST_ARGS ?=

.PHONY: run test test-quick install install-dev local-model local-model-for-tests migrate test-sqlite test-postgres browser services check lint eval

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	$(PIP) install --quiet -r requirements.txt

install-dev: $(PY)
	$(PIP) install --quiet -r requirements-dev.txt

# The offline default: the local model, unless a provider is configured in the environment.
# First time on a machine: ~4 min (compiling llama.cpp) + 1.1 GB download; then seconds.
local-model: install
	@if [ -z "$$OPENAI_API_KEY$$OPENAI_BASE_URL$$AGENTS_MODEL_PROVIDER" ]; then \
		$(PY) manage.py local_model install; \
	else echo "local-model: a provider is configured; skipping the local model"; fi

# The tests always get it: the smoke tests drive the real local model through the app.
local-model-for-tests: install
	$(PY) manage.py local_model install

migrate: install
	$(PY) manage.py migrate --noinput

# The agents' evaluation on the local model (docs/evaluation.md), in a database of its own:
# ~40 min on 2 cores. EVAL_ARGS="--agent support" for one agent; results in var/eval-local.json.
eval: install local-model-for-tests
	DATABASE_URL=sqlite:///var/eval.sqlite3 $(PY) manage.py migrate --noinput -v 0
	DATABASE_URL=sqlite:///var/eval.sqlite3 $(PY) manage.py evaluate --provider local --json var/eval-local.json $(EVAL_ARGS)

run: install local-model migrate
	$(PY) manage.py recover_runs
	$(PY) manage.py ensure_demo_user
	@echo "Serving on http://$(HOST):$(PORT)/  (Ctrl+C to stop)"
	$(PY) manage.py runserver $(HOST):$(PORT)

browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for browser tests"; \
		apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }

services:
	./scripts/services.sh

lint: install-dev
	$(VENV)/bin/ruff check .

check: lint
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py check

# The provider variables are unset: tests choose their model themselves (conftest.py).
TEST_ENV := env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u AGENTS_MODEL_PROVIDER

test-sqlite: install-dev browser
	$(TEST_ENV) -u DATABASE_URL -u REDIS_URL AGENTS_REQUIRE_LOCAL_MODEL=1 $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: install-dev browser services
	$(TEST_ENV) DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) AGENTS_REQUIRE_LOCAL_MODEL=1 $(PY) -m pytest $(PYTEST_ARGS)

# Everything but the local-model smoke tests, once, on SQLite: no 4-minute llama.cpp build.
test-quick: check browser
	$(TEST_ENV) -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -m "not local_model" $(PYTEST_ARGS)

test: check local-model-for-tests
	@echo "=== SQLite + in-memory channel layer ==="
	$(MAKE) --no-print-directory test-sqlite
	@echo "=== PostgreSQL + Redis ==="
	$(MAKE) --no-print-directory test-postgres

