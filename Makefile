# Two commands do everything on a fresh machine (see README.md):
#   make run    install what is missing, then run the main job end to end on the synthetic data
#   make test   install what is missing, then run the test suite
# The environment is a Python 3.10 venv in .venv, pinned by constraints.txt.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmml-installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint format venv lock clean help

help:
	@echo "make run     - install if needed, run the main job (cmml run $(ARGS))"
	@echo "make test    - install if needed, check formatting and lint, run the test suite"
	@echo "make lint    - ruff format --check and ruff check (configured in pyproject.toml)"
	@echo "make format  - ruff format and ruff check --fix"
	@echo "make venv    - create/refresh .venv only"
	@echo "make lock    - rewrite constraints.txt from the current .venv"

venv: $(STAMP)

$(STAMP): setup.py constraints.txt pyproject.toml
	@py310=$$(tools/find_python310.sh) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then \
	  echo "creating $(VENV) with $$py310"; rm -rf $(VENV); "$$py310" -m venv $(VENV) || exit 1; \
	fi
	@echo "installing the pinned environment into $(VENV) (about 2-3 minutes the first time; log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --upgrade "pip>=23" && $(PY) -m pip install -c constraints.txt -e '.[dev]'; } \
	  > $(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

run: $(STAMP)
	@$(VENV)/bin/cmml run $(ARGS)

test: lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check --quiet . || { echo "formatting differs: run 'make format'"; exit 1; }
	$(VENV)/bin/ruff check --quiet .

format: $(STAMP)
	$(VENV)/bin/ruff format --quiet .
	$(VENV)/bin/ruff check --quiet --fix .

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^cmml-tfx' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
