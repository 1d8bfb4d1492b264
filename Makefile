# The two commands: `make run` and `make test`.  Each installs what it needs:
# the Debian packages where missing, the virtualenv, the project.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: servers for the local stack and the tests, tools the tests drive.
# gcc and python3-dev build the compiled row walk (invalidator/_rowwalk.c)
RUN_PACKAGES  := mariadb-server redis-server gcc python3-dev
TEST_PACKAGES := $(RUN_PACKAGES) prometheus wrk

.PHONY: run test check bench system-run system-test clean help

help:
	@echo "make run    - MariaDB + Redis + invalidator + API on http://127.0.0.1:5000 (Ctrl-C stops all)"
	@echo "make test   - make check, then the whole test suite against throwaway servers"
	@echo "make check  - ruff and mypy (configured in pyproject.toml)"
	@echo "make bench  - benchmark.py against a running 'make run' stack"

run: system-run $(VENV)/.installed
	$(PY) -m cachetail.localrun

test: system-test $(VENV)/.installed check
	$(PY) -m pytest

# ruff lints everything; mypy types the service's packages strictly (pyproject.toml)
check: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) benchmark.py

# Installs only what is missing, so a machine that has everything is not touched.
system-run:
	@./scripts/ensure-packages $(RUN_PACKAGES)

system-test:
	@./scripts/ensure-packages $(TEST_PACKAGES)

# setup.py builds the compiled row walk (invalidator/_rowwalk*.c) in place: rebuilt when it changes
$(VENV)/.installed: pyproject.toml setup.py $(wildcard invalidator/_rowwalk*.[ch])
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cachetail needs Python >= 3.11")'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install the Debian package python3-venv"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache bench-results *.egg-info
	@echo "kept .state/ (local database) and .env; remove them by hand to start over"
