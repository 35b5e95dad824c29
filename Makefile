# Two commands for a fresh machine with Python 3.11+ and make:
#   make serve   install Herald (locked) and run its main job: `herald serve`
#   make test    install Herald with its test tools (locked) and run every check and test
#
# Every environment installs from a lock in requirements/ (pinned versions with hashes, checked
# by uv, itself installed by hash with pip); `make lock` refreshes the locks, `make test-latest` runs the suite against
# the newest release of every dependency. docs/development.md says why and how.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
INSTALL := $(UV) pip install --quiet --python $(BIN)/python
PYTEST_ARGS ?=
LOCK := $(UV) pip compile --universal --generate-hashes --python-version 3.11 --quiet
LOCK_PROJECT := $(LOCK) pyproject.toml requirements/build.in

.PHONY: serve test check lint types docs test-latest lock bench dist clean compiled \
	test-compiled test-compiled-tier

# uv, by hash, with the pip that comes with Python; it installs the rest.
$(UV): requirements/uv.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes \
		-r requirements/uv.txt
	touch $@

# One stamp per lock. The locks agree on every shared version (test and serve are resolved
# within bench), so installing one over another never changes a version already there.
# Herald itself goes in editable, without dependencies or build isolation (setuptools is in
# the lock): nothing unpinned is fetched.
$(VENV)/.%: requirements/%.txt pyproject.toml $(UV)
	$(INSTALL) --require-hashes -r $<
	$(INSTALL) --no-deps --no-build-isolation -e .
	touch $@

.PRECIOUS: $(VENV)/.serve $(VENV)/.test $(VENV)/.bench

serve: $(VENV)/.serve
	$(BIN)/herald serve

# Lint, format, and the layer contracts ([tool.importlinter] in pyproject.toml, see
# docs/architecture.md): a lower layer importing a higher one fails here.
lint: $(VENV)/.test
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/ruff format --check src tests bench scripts examples
	$(BIN)/lint-imports --no-cache --no-logo

types: $(VENV)/.test
	$(BIN)/mypy

# The documentation site (mkdocs.yml) into site/, strictly: a broken link or anchor, a page
# missing from the nav or a docstring the API reference cannot read fails the build.
docs: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Lint, format, contracts, types and the unit tier (every test that needs no server; the tiers:
# docs/development.md): a minute at most.
check: lint types
	$(BIN)/python -m pytest -m unit -q $(PYTEST_ARGS)

# Everything, the four tiers (unit, integration, topology, faults): real Valkey servers
# (standalone, Sentinel, Cluster, TLS), the gateway, the dashboard in a headless browser
# (scripts/ensure-browser.sh installs Debian's chromium when it is missing and this is root),
# the fault scenarios' smoke runs. One tier: make test PYTEST_ARGS="-m topology".
# Then the compiled tier (below) when there is a C compiler.
test: lint types docs
	scripts/ensure-browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-compiled-tier

# The optional compiled core (setup.py: HERALD_MYPYC=1 compiles herald._core and herald._io.link
# with mypyc), built apart from src/: build/compiled holds the whole package, the compiled
# modules as C extensions next to their sources. PYTHONPATH=build/compiled runs it (subprocesses
# inherit it); the generated C goes to build/. Incremental: only what changed is compiled again.
COMPILED := build/compiled
# A C compiler, and Python's headers for it (Debian: python3-dev).
CC_FOUND := $(shell (command -v cc || command -v gcc) >/dev/null && $(PYTHON) -c \
	'import os, sysconfig; print(os.path.exists(sysconfig.get_paths()["include"] + "/Python.h") or "")')

compiled: $(VENV)/.test
	@mkdir -p build
	HERALD_MYPYC=1 $(BIN)/python setup.py -q build --build-base build/setup \
		--build-lib $(COMPILED) > build/compiled.log 2>&1 || { cat build/compiled.log; exit 1; }

RUN_COMPILED := HERALD_EXPECT_COMPILED=1 PYTHONPATH=$(COMPILED) $(BIN)/python -m pytest \
	-p no:cacheprovider
# What the compiled core runs most: the wire format, messages, the options Link takes, Link's
# writes and reconnects, live, durable and recoverable topics (and tests/test_accelerator.py,
# which fails if the core is not the compiled one).
COMPILED_TIER := tests/test_accelerator.py tests/test_wire.py tests/test_fuzz_wire.py \
	tests/test_client_options.py tests/test_reconnect.py tests/test_pubsub.py \
	tests/test_durable.py tests/test_durable_fast.py tests/test_durable_replay.py \
	tests/test_durable_settled.py tests/test_recoverable.py

# make test's compiled tier, ~3 min with the build: the unit tier and COMPILED_TIER's servers.
# Skipped, saying so, on a machine without a C compiler or Python's headers.
test-compiled-tier:
ifeq ($(CC_FOUND),)
	@echo "No C compiler (cc, gcc) or no Python.h: the compiled tier is skipped; the pure tiers ran."
else
	$(MAKE) --no-print-directory compiled
	$(RUN_COMPILED) -q -m unit
	$(RUN_COMPILED) -q -m "not unit and not faults" $(COMPILED_TIER)
endif

# Every test against the compiled core (~15 min): before a release, not in CI.
test-compiled: compiled
	scripts/ensure-browser.sh
	$(RUN_COMPILED) $(PYTEST_ARGS)

# The suite against the newest release of every dependency, in its own environment: rot is
# found here, on purpose, before a lock refresh brings it to everyone.
test-latest: $(UV)
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	$(UV) pip install --quiet --python .venv-latest/bin/python --upgrade \
		-r requirements/build.in -e '.[serve,uvloop,dev,docs,fastapi,pytest]'
	.venv-latest/bin/ruff check src tests bench scripts examples
	.venv-latest/bin/lint-imports --no-cache --no-logo
	.venv-latest/bin/mypy
	NO_MKDOCS_2_WARNING=1 .venv-latest/bin/mkdocs build --strict --quiet --site-dir .venv-latest/site
	scripts/ensure-browser.sh
	.venv-latest/bin/python -m pytest $(PYTEST_ARGS)

# Re-resolve every lock to the newest versions that the ranges in pyproject.toml allow.
lock: $(UV)
	$(LOCK) --upgrade requirements/uv.in -o requirements/uv.txt
	$(LOCK_PROJECT) --upgrade --extra serve --extra uvloop --extra dev --extra docs --extra bench \
		-o requirements/bench.txt
	$(LOCK_PROJECT) --extra serve --extra uvloop --extra dev --extra docs -c requirements/bench.txt \
		-o requirements/test.txt
	$(LOCK_PROJECT) --extra serve -c requirements/bench.txt -o requirements/serve.txt

bench: $(VENV)/.bench
	$(BIN)/python bench/live.py

# The sdist (the sources) and the wheel, checked; tests/test_dist.py installs the wheel in a new
# venv. With a C compiler the wheel carries the compiled core (HERALD_MYPYC=1, platform-tagged);
# without one it is the pure-Python wheel.
dist: $(VENV)/.test
	rm -rf dist
	$(BIN)/python -m build --no-isolation --sdist --outdir dist .
	$(if $(CC_FOUND),HERALD_MYPYC=1) $(BIN)/python -m build --no-isolation --wheel --outdir dist .
	$(BIN)/twine check --strict dist/*

clean:
	rm -rf $(VENV) .venv-latest dist build site .mypy_cache .ruff_cache .pytest_cache .hypothesis
