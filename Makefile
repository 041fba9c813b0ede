# The two entry points of the README: `make run` and `make test`.
BUILD ?= build
SAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS ?= $(shell nproc)
CONF ?= conf/moongate.yaml

PREFIX ?= /usr/local

.PHONY: all deps build install run test test-asan test-valgrind fuzz bench format clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/Makefile:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# DESTDIR (staging root) is honoured by cmake --install through the environment.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

run: build
	@scripts/run-demo.sh $(BUILD)/moongate $(CONF)

test: build
	cd $(BUILD) && ctest --output-on-failure

$(SAN_BUILD)/Makefile:
	cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMOONGATE_SANITIZE=ON

test-asan: deps $(SAN_BUILD)/Makefile
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure

# The C unit tests under valgrind: leaks and invalid accesses fail the run.
# --fair-sched: valgrind runs one thread at a time, and by default a thread
# spinning in JIT-compiled Lua can keep the plugin watchdog thread off the CPU
# for tens of seconds (the runaway tests then measure valgrind, not the guard).
test-valgrind: build
	@set -e; for t in $(BUILD)/tests/test_*; do \
	  echo "valgrind $$t"; \
	  valgrind --fair-sched=yes --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect $$t >/dev/null; \
	done; echo "valgrind: all unit tests clean"

# libFuzzer targets (tests/fuzz/README.md), clang + ASan + UBSan: each runs
# FUZZ_SECONDS on a scratch copy of its seed corpus; any crash fails.
$(FUZZ_BUILD)/Makefile:
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DMOONGATE_FUZZ=ON -DMOONGATE_TESTS=OFF

fuzz: deps $(FUZZ_BUILD)/Makefile
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_targets
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

bench: build
	@scripts/deps.sh --bench
	bench/run.sh

format:
	clang-format -i $$(git ls-files 'gateway/*.c' 'gateway/*.h' 'tests/unit/*.c')

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD)
