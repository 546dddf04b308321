# predictd build.
#
#   make            build build/predictd
#   make deps       install missing Debian packages (idempotent, fast when done):
#                   deps-run (build + run), deps-test, deps-bench; deps = all three
#   make run        the service on an embedded PostgreSQL + Redis under .run/
#   make test       unit + integration tests; ends with "N passed, N failed"
#                   (browser tests in headless Chromium when it is installed)
#   make browser-deps  puppeteer-core into tests/browser/node_modules (npm ci)
#   make sanitize   the same suite built with ASan + UBSan into build-san/
#   make coverage   the same suite built with --coverage into build-cov/; line and
#                   branch coverage per module (lcov), report in build-cov/html/
#   make tsan       the thread-heavy tests built with ThreadSanitizer into build-tsan/
#   make bench      benchmarks (figures in bench/README.md)
#   make fuzz       libFuzzer runs of every parser (FUZZ_SECONDS each, default 30)
#   make format / format-check
#
# SANITIZER=address,undefined builds an instrumented tree (used by sanitize).

BUILD     ?= build
SANITIZER ?=
CC        ?= cc
PYTHON    ?= /usr/bin/python3

PKGS      := libulfius libmicrohttpd jansson libpq hiredis libprotobuf-c zlib libcurl openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-missing-field-initializers
CFLAGS  ?= -O2 -g
override CFLAGS += -std=gnu17 $(WARN) -pthread -I. -I$(BUILD)/gen $(PKG_CFLAGS) \
           -DPREDICTD_VERSION='"$(VERSION)"' -DPREDICTD_COMMIT='"$(COMMIT)"'
override LDLIBS += $(PKG_LIBS) -lm -pthread
ifneq ($(SANITIZER),)
override CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
override LDFLAGS += -fsanitize=$(SANITIZER)
endif

# V=1 prints every command
Q := $(if $(V),,@)

VERSION := 0.1.0
COMMIT  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

MODULES := util inference features store feed registry training predict api server
PROTO   := $(wildcard proto/*.proto)
GEN_C   := $(patsubst proto/%.proto,$(BUILD)/gen/proto/%.pb-c.c,$(PROTO))
GEN_H   := $(GEN_C:.c=.h)
SRC     := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
LIB_SRC := $(filter-out server/main.c,$(SRC))
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(patsubst %.c,%.o,$(GEN_C))
MAIN_OBJ := $(BUILD)/obj/server/main.o
LIB     := $(BUILD)/libpredictd.a
BIN     := $(BUILD)/predictd

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
# each fuzz target also runs its committed corpus and regressions in `make test`
FUZZ_REPLAY := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/test_%,$(FUZZ_SRC))

# Debian packages, by what needs them. `make run` installs only DEPS_RUN;
# test, sanitize and fuzz add DEPS_TEST (and the npm schema validator of
# tests/k8s); bench adds DEPS_BENCH. `make deps` installs all of them (what
# CI needs: .ci/run calls it).
DEPS_RUN   := build-essential pkg-config libulfius-dev libjansson-dev libpq-dev \
    libhiredis-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev postgresql redis-server \
    libcurl4-gnutls-dev libssl-dev python3-minimal
DEPS_TEST  := curl python3 python3-yaml python3-jsonschema python3-protobuf protobuf-compiler \
    python3-numpy python3-sklearn python3-torch python3-xgboost prometheus python3-websockets \
    clang libclang-rt-14-dev lcov chromium
DEPS_BENCH := curl python3 python3-numpy python3-protobuf protobuf-compiler wrk nginx-light \
    python3-psycopg2 python3-flask linux-perf strace
DEB_PACKAGES := $(sort $(DEPS_RUN) $(DEPS_TEST) $(DEPS_BENCH))
APT_GET := apt-get -o DPkg::Lock::Timeout=900

# generated sources are kept, not deleted as intermediates
.SECONDARY: $(GEN_C) $(GEN_H)

.PHONY: all deps deps-run deps-test deps-bench run test unit sanitize tsan coverage bench fuzz \
    format format-check clean docker-check compose-test browser-deps build-tests build-bench
all: $(BIN)

# apt_install NAME PACKAGES: installs the packages that are missing (idempotent,
# instant when all are there).
define apt_install
	@missing=$$(for p in $(2); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "$(1): installing:" $$missing; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq --no-install-recommends $$missing; \
	else echo "$(1): all present"; fi
endef

deps-run:
	$(call apt_install,deps-run,$(DEPS_RUN))

deps-test: deps-run
	$(call apt_install,deps-test,$(DEPS_TEST))
	@command -v npm >/dev/null || { SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq --no-install-recommends nodejs npm; }
	@[ -d tests/k8s/node_modules/kubernetes-models ] || \
	    (cd tests/k8s && npm ci --no-audit --no-fund --loglevel=error)
	@# the OpenAPI linter the test suite runs (project-local, from the lock file)
	@[ -x tests/contract/node_modules/.bin/redocly ] || \
	    npm ci --prefix tests/contract --no-audit --no-fund --loglevel=error || \
	    echo "deps-test: npm ci in tests/contract failed: the redocly lint will be skipped"

# The browser tests' driver (puppeteer-core, pinned by package-lock.json) in
# tests/browser/node_modules; without Chromium or npm the tests skip and say so.
BROWSER_MODULES := tests/browser/node_modules/.package-lock.json
$(BROWSER_MODULES): tests/browser/package.json tests/browser/package-lock.json
	@if command -v npm >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then \
	    echo "  NPM     tests/browser (puppeteer-core)"; \
	    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) || \
	    echo "browser-deps: npm ci failed: the browser tests will skip"; \
	else echo "browser-deps: chromium or npm missing: the browser tests will skip"; fi
browser-deps: $(BROWSER_MODULES)

deps-bench: deps-run
	$(call apt_install,deps-bench,$(DEPS_BENCH))

# everything CI needs
deps: deps-run deps-test deps-bench

$(BUILD)/gen/proto/%.pb-c.c $(BUILD)/gen/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	@echo "  PROTOC  $<"
	$(Q)protoc-c --c_out=$(BUILD)/gen $<

$(BUILD)/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/gen/proto/%.pb-c.o: $(BUILD)/gen/proto/%.pb-c.c
	@echo "  CC      $<"
	$(Q)$(CC) $(filter-out -W%,$(CFLAGS)) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	@echo "  AR      $@"
	$(Q)ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(LIB)
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/unit.h tests/unit/fixtures.h $(LIB)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# test_faults and test_faults_db inject allocation failures: the allocation
# calls of libpredictd.a (and of the test) go through the __wrap_ functions
# of tests/unit/fault_wrap.h.
FAULT_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup \
    -Wl,--wrap=aligned_alloc,--wrap=free,--wrap=protobuf_c_message_free_unpacked
$(BUILD)/tests/test_faults $(BUILD)/tests/test_faults_db: override LDFLAGS += $(FAULT_WRAP)
$(BUILD)/tests/test_faults $(BUILD)/tests/test_faults_db: tests/unit/fault_wrap.h
# test_faults_io injects system call failures (read, fsync, fstat, close,
# openat) into the repository's file code the same way (fstat and openat
# are fstat64 and openat64 with 64-bit file offsets).
$(BUILD)/tests/test_faults_io: override LDFLAGS += \
    -Wl,--wrap=read,--wrap=fsync,--wrap=fstat64,--wrap=close,--wrap=openat64

$(BUILD)/tests/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "  REPLAY  $@"
	$(Q)$(CC) $(CFLAGS) -DFUZZ_NAME='"fuzz_$*"' -DFUZZ_ROOT='"$(abspath .)"' $(LDFLAGS) -o $@ \
	    tests/fuzz/replay.c $< $(LIB) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	$(Q)$(CC) $(CFLAGS) -O3 $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

unit: $(UNIT_BIN)

# The whole suite: every unit binary, then the integration tests, which start
# the real binary against a private PostgreSQL and Redis.
# Targets that need the Debian packages re-enter make after `deps`, so that on
# a fresh machine the build sees the pkg-config flags of what deps installed.
test: deps-test
	@$(MAKE) --no-print-directory build-tests browser-deps
	PREDICTD_BIN=$(abspath $(BIN)) PREDICTD_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) \
	    PREDICTD_SANITIZER=$(SANITIZER) tests/run

build-tests: all $(UNIT_BIN) $(FUZZ_REPLAY)

sanitize: deps-test
	PREDICTD_SANITIZER=address,undefined \
	    $(MAKE) BUILD=build-san SANITIZER=address,undefined CFLAGS='-O1 -g' test

# Coverage: the whole suite on a --coverage build (its own tree, so the
# counters are not mixed with build/), then lcov's line and branch figures per
# module (tests/coverage_table.py) and an HTML report. A failing test does not
# stop the report; the suite's summary line says how it went.
COV_LCOV := lcov --quiet --rc lcov_branch_coverage=1
# the files whose functions must not fall under 80% of branches: the
# prediction pipeline, registry verification, import, the loop, the ledger
COV_KEY_FILES := predict/pipeline.c inference/run.c registry/registry.c registry/files.c \
    server/cmd_data.c predict/loop.c predict/resolver.c store/ledger.c
coverage: deps-test
	@$(MAKE) --no-print-directory BUILD=build-cov CFLAGS='-O0 -g --coverage' LDFLAGS=--coverage \
	    build-tests browser-deps
	@$(COV_LCOV) --zerocounters --directory build-cov
	-PREDICTD_BIN=$(abspath build-cov/predictd) PREDICTD_BUILD=$(abspath build-cov) \
	    PYTHON=$(PYTHON) tests/run
	@$(COV_LCOV) --capture --directory build-cov --base-directory . --no-external \
	    --output-file build-cov/coverage.info
	@genhtml --quiet --branch-coverage --output-directory build-cov/html build-cov/coverage.info
	@$(PYTHON) tests/coverage_table.py build-cov/coverage.info --root . --functions \
	    $(COV_KEY_FILES)

# ThreadSanitizer over the tests whose threads meet: streams and the loop,
# swaps under load, WebSocket churn, background jobs (tests/tsan.supp holds
# the reports inside uninstrumented libraries, each with its reason).
TSAN_TESTS ?= test_loop test_registry_swap test_hardening test_training_api test_registry
# Every process writes its reports to build-tsan/tsan-report.PID (the
# services' exit codes are not all checked): any such file fails the target.
tsan: deps-test
	@mkdir -p build-tsan && rm -f build-tsan/tsan-report.*
	PREDICTD_SANITIZER=thread TSAN_OPTIONS="suppressions=$(abspath tests/tsan.supp) \
	    halt_on_error=0 second_deadlock_stack=1 log_path=$(abspath build-tsan)/tsan-report" \
	    TESTS='$(TSAN_TESTS)' $(MAKE) BUILD=build-tsan SANITIZER=thread CFLAGS='-O1 -g' test
	@if ls build-tsan/tsan-report.* >/dev/null 2>&1; then \
	    echo "tsan: ThreadSanitizer reports:"; head -n 60 build-tsan/tsan-report.*; exit 1; \
	else echo "tsan: no ThreadSanitizer report"; fi

bench: deps-bench
	@$(MAKE) --no-print-directory build-bench
	PREDICTD_BIN=$(abspath $(BIN)) PREDICTD_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) \
	    bench/run

build-bench: all $(BENCH_BIN)

fuzz: deps-test
	$(MAKE) BUILD=build-fuzz CC=clang SANITIZER=fuzzer-no-link,address,undefined CFLAGS='-O1 -g' \
	    build-fuzz/libpredictd.a
	tests/fuzz/run build-fuzz

run: deps-run
	@$(MAKE) --no-print-directory all
	server/run.sh $(abspath $(BIN))

format:
	clang-format -i $(SRC) $(wildcard */*.h) $(UNIT_SRC) $(BENCH_SRC)

format-check:
	clang-format --dry-run --Werror $(SRC) $(wildcard */*.h) $(UNIT_SRC) $(BENCH_SRC)

docker-check:
	docker/check.sh

# The compose stack as shipped on a container engine (../shared/tools/containers/engine,
# or PREDICTD_ENGINE): builds the image, starts docker/compose.yaml from empty
# volumes and checks it (tests/compose/test_compose.py). Takes minutes; not in .ci/run.
compose-test:
	$(PYTHON) tests/compose/test_compose.py

clean:
	rm -rf build build-san build-fuzz build-cov

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
