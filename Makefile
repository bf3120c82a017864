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

.PHONY: run test venv lock clean help

help:
	@echo "make run     - install if needed, run the main job (cmml run $(ARGS))"
	@echo "make test    - install if needed, run the test suite"
	@echo "make venv    - create/refresh .venv only"
	@echo "make lock    - rewrite constraints.txt from the current .venv"

venv: $(STAMP)

$(STAMP): setup.py constraints.txt
	@py310=$$(tools/find_python310.sh) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then \
	  echo "creating $(VENV) with $$py310"; rm -rf $(VENV); "$$py310" -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --upgrade "pip>=23" 2>&1 | grep -v '^WARNING: Location' || true
	@echo "installing the pinned environment (about 2 minutes the first time)"
	set -o pipefail; $(PY) -m pip install --quiet -c constraints.txt -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/cmml run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^cmml-tfx' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
