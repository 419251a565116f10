# Docket — the two commands a user needs: `make run` and `make test`.
# Everything else here is a step of those two, runnable on its own.
SHELL := /bin/bash
JOBS  ?= 2
PY    := /usr/bin/python3

.PHONY: all deps deps-test build build-clang build-asan run test unit system \
        format format-check lint-openapi docs-check deploy-check image-check fresh-check \
        install fuzz valgrind pg-backup-drill \
        static-analysis coverage bench bench-peer clean monitoring-check

all: build

deps:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

# Release build (gcc): what `make run` starts.
# It needs no test library and builds only `docket`.
build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc \
	  -DDOCKET_TESTS=OFF >/dev/null
	@cmake --build build -j$(JOBS) --target docket -- --no-print-directory

# The same code under clang with -Werror (warnings differ between compilers).
build-clang:
	@cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang >/dev/null
	@cmake --build build-clang -j$(JOBS)

# AddressSanitizer + UndefinedBehaviorSanitizer: unit and system tests run against this one.
build-asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=gcc -DDOCKET_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(JOBS)

# make run PORT=8080 ARGS='--log.level=debug'
run: build
	./build/docket all $(if $(PORT),--server.port=$(PORT)) $(ARGS)

# One test binary at a time: several of them restart or kill clients of the shared servers.
unit: build-asan
	@scripts/with-test-servers.sh ctest --test-dir build-asan --output-on-failure

# Three pytest workers (pytest-xdist, a file per worker at a time): the system tests mostly
# wait on processes and clocks, not on the CPU. SYSTEM_WORKERS=0 runs them in one process.
SYSTEM_WORKERS ?= 3
system: build-asan
	@DOCKET_BIN=$(CURDIR)/build-asan/docket $(PY) -m pytest tests/system -q -p no:cacheprovider \
	  --durations=12 $(if $(filter-out 0,$(SYSTEM_WORKERS)),-n $(SYSTEM_WORKERS) --dist loadfile)

format:
	@clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')

format-check:
	@clang-format --dry-run --Werror $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h') \
	  && echo "format-check: ok"

lint-openapi:
	@scripts/lint-openapi.sh

docs-check: build
	@./build/docket config-docs | diff -u docs/configuration.md - \
	  && echo "docs-check: docs/configuration.md matches the config table"

# Deployment artefacts (kustomize, schemas, compose, Dockerfile, promtool, actionlint).
deploy-check: build
	@scripts/deploy-check.sh

# The monitoring stack against a real Prometheus: the five split processes scraped through
# deploy/monitoring/prometheus.yml (targets rewritten), every dashboard query and alert
# expression evaluated over the HTTP API, the HPA's requests_per_second per pod (about 40 s).
monitoring-check: build
	@scripts/with-test-servers.sh $(PY) scripts/monitoring-check.py $(CURDIR)/build/docket

# Builds the container image with podman from a bootstrapped Debian base and runs it (slow:
# about 1.5 minutes; not part of `make test`).
image-check:
	@scripts/image-check.sh

# The first ten minutes on a machine that has never seen Docket: a clone in a podman container
# from the bare Debian 12 base, `make run`, then the README's Try-it block (3-5 minutes; not part
# of `make test`).
fresh-check:
	@scripts/fresh-check.sh

# Installs the binary: make install [PREFIX=/usr/local] [DESTDIR=]
PREFIX ?= /usr/local
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 build/docket $(DESTDIR)$(PREFIX)/bin/docket

# Backup/restore drill on a throwaway PostgreSQL, timed against the 15-minute RTO.
pg-backup-drill: build
	@scripts/pg-backup-drill.sh

static-analysis: deps-test
	@scripts/install-deps.sh analysis
	@cmake -S . -B build-tidy -DCMAKE_C_COMPILER=clang >/dev/null
	@run-clang-tidy-14 -p build-tidy -quiet 'src/.*\.c$$'
	@cppcheck --project=build-tidy/compile_commands.json --enable=warning,performance,portability \
	  --error-exitcode=1 --quiet --suppress='*:/usr/*'

coverage: deps-test
	@scripts/install-deps.sh analysis
	@cmake -S . -B build-coverage -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=--coverage >/dev/null
	@cmake --build build-coverage -j$(JOBS)
	@scripts/with-test-servers.sh ctest --test-dir build-coverage -j$(JOBS)
	@mkdir -p build-coverage/coverage && gcovr -r . --filter src/ \
	  --xml build-coverage/coverage/coverage.xml --html-details build-coverage/coverage/index.html build-coverage

# The unit tests under Valgrind's memcheck (a plain debug build: memcheck and ASan do not mix).
# About three minutes here; not part of `make test`.
valgrind: deps-test
	@cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=gcc >/dev/null
	@cmake --build build-valgrind -j$(JOBS) -- --no-print-directory
	@scripts/with-test-servers.sh scripts/valgrind-unit.sh build-valgrind $(VALGRIND_TESTS)

# Fuzzing with libFuzzer (clang, ASan+UBSan): every target of tests/fuzz for FUZZ_SECONDS
# each (default 60), from the committed corpus; make test replays that corpus (fuzz_corpus_*).
FUZZ_SECONDS ?= 60
fuzz: deps-test
	@cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DDOCKET_FUZZ=ON \
	  -DDOCKET_TESTS=OFF -DDOCKET_SANITIZE=ON >/dev/null
	@cmake --build build-fuzz -j$(JOBS) -- --no-print-directory
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The load benchmark (see bench/README.md).
bench: build
	@bench/run.sh --no-build $(BENCH_ARGS)

# The same with the Node.js peer (../shared/peers/node) beside Docket: the ratio table.
bench-peer: build
	@bench/run.sh --no-build --peer $(BENCH_ARGS)

test: deps-test
	@$(MAKE) --no-print-directory format-check
	@$(MAKE) --no-print-directory build build-clang build-asan
	@$(MAKE) --no-print-directory docs-check lint-openapi deploy-check monitoring-check
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory system

clean:
	rm -rf build build-clang build-asan build-tidy build-coverage build-fuzz build-valgrind
