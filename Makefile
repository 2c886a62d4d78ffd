# The few verbs a person types. Everything installs into .venv (and .venv-tasks for the Cloud Tasks
# emulator, which pins protobuf<5) from the pinned requirements files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TASKS_VENV := .venv-tasks

.PHONY: dev test lint unit bench token install clean

install: $(VENV)/.installed $(TASKS_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(TASKS_VENV)/.installed: requirements-tasks.txt
	$(PYTHON) -m venv $(TASKS_VENV)
	$(TASKS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TASKS_VENV)/bin/python -m pip install --quiet -r requirements-tasks.txt
	touch $@

## Run the whole local stack in the foreground until Ctrl-C (API on http://127.0.0.1:$${API_PORT:-8080}).
dev: install
	$(PY) -m infra.stack

## Lint, then the whole suite: unit, integration and end-to-end against freshly started emulators.
test: install lint
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(PY) -m ruff check common functions infra synqctl tests main.py
	$(PY) -m ruff format --check common functions infra synqctl main.py
	$(PY) -m mypy common functions synqctl

bench: install
	$(PY) -m pytest tests/perf -m perf -s -p no:cacheprovider

## make token ORG=… TENANT=… EMAIL=… [ROLE=viewer|editor|admin]
token: install
	@$(PY) -m infra.token --org "$(ORG)" --tenant "$(TENANT)" --email "$(EMAIL)" --role "$(or $(ROLE),editor)"

clean:
	rm -rf $(VENV) $(TASKS_VENV) .dev .pytest_cache .mypy_cache .ruff_cache
