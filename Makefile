# Two commands for a fresh machine with Python 3.11+ and make:
#   make serve   install Herald and run its main job
#   make test    install Herald with its test tools and run every check and test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/herald serve

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/ruff format --check src tests bench scripts examples
	$(BIN)/mypy

test: lint
	scripts/ensure-browser.sh
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev
	$(BIN)/herald bench live

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
