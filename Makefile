# concord — the front door. CMake does the building; this file names the jobs.
#
#   make          build (build/concord)
#   make run      build, load the demonstration population, serve it (prints URLs)
#   make test     every test: unit (cmocka via ctest) and end to end (pytest),
#                 on SQLite and on a throwaway PostgreSQL cluster
#   make bench    benchmarks; figures printed and written to bench/results/
#   make deps     install the Debian packages concord needs
#   make SANITIZE=1 test   the same under AddressSanitizer + UBSan (build-asan/)
#   make fuzz     build the libFuzzer harnesses and run each for FUZZ_SECONDS

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build-asan
CMAKE_FLAGS += -DCONCORD_SANITIZE=ON
else
BUILD ?= build
endif
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 30

DEB_PACKAGES = build-essential cmake pkg-config libsqlite3-dev libpq-dev libmicrohttpd-dev \
  libjansson-dev libsodium-dev libgnutls28-dev libcmocka-dev openssl postgresql wrk python3-pytest python3-requests \
  python3-hl7 python3-selenium chromium chromium-driver clang libclang-rt-14-dev
DEB_CHECK = libsqlite3-dev libpq-dev libmicrohttpd-dev libjansson-dev libsodium-dev libgnutls28-dev libcmocka-dev \
  cmake pkg-config

.PHONY: all build deps run test unit e2e bench fuzz format clean

all: build

build: .deps-ok
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Install missing packages only (quick when everything is there).
.deps-ok:
	@if ! dpkg -s $(DEB_CHECK) >/dev/null 2>&1; then $(MAKE) --no-print-directory deps; fi

deps:
	@SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	$$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)

run: build
	./$(BUILD)/concord demo

# Unit tests, then end-to-end tests on SQLite and PostgreSQL. When
# CONCORD_TEST_PG is not set, a throwaway PostgreSQL cluster is started for
# the run and removed after it.
test: build
	@if ! dpkg -s postgresql wrk python3-pytest python3-requests python3-hl7 python3-selenium chromium-driver openssl >/dev/null 2>&1; then $(MAKE) --no-print-directory deps; fi
	@tests/with-postgres.sh ctest --test-dir $(BUILD) --output-on-failure -j 1

bench: build
	@bench/run.sh ./$(BUILD)/concord

fuzz:
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCONCORD_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@for f in build-fuzz/fuzz_*; do \
	  name=$$(basename $$f); seeds=fuzz/corpus/$${name#fuzz_}; work=build-fuzz/corpus-$${name#fuzz_}; \
	  mkdir -p $$seeds $$work; echo "== $$name ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$work $$seeds 2>&1 | tail -3 || exit 1; \
	done

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' ':!src/fhir/model_gen.c' 'tests/unit/*.c' 'fuzz/*.c')

clean:
	rm -rf build build-asan build-fuzz
