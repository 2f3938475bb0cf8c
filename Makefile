# The two set-up commands are `make run` and `make test`; both install what is missing first.
SHELL := /bin/bash
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: install run stop test lint unit integration e2e bench chaos soak

install:
	@scripts/install.sh

run: install
	@$(VENV)/shaman dev up
	@$(VENV)/python -m devstack.example --deploy

stop:
	@$(VENV)/shaman dev down

lint: install
	$(VENV)/ruff check .
	$(VENV)/mypy shared services devstack cli
	$(VENV)/lint-imports

test: install lint
	$(VENV)/pytest -q $(PYTEST_ARGS)

unit: install
	$(VENV)/pytest -q tests/unit

bench: install
	$(VENV)/python -m bench

# Every chaos scenario, the slow ones too (make test runs the fast ones); docs/chaos.md.
chaos: install
	SHAMAN_CHAOS_FULL=1 $(VENV)/pytest -q tests/chaos

soak: install
	$(VENV)/python -m tests.chaos.soak
