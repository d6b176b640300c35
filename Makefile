# Thin wrapper over CMake so the README's commands stay short.
#   make test   installs missing Debian packages, builds the sanitizer tree and runs every test
#   make build  release build into build/bin/
#   make bench  release build, then the CPU benchmarks (results under bench/results/)
#   make run    release build, then pipeditd on the embedded tiny model (data in $PIPEDIT_DATA, default ./data;
#               more flags in RUN_FLAGS, e.g. make run RUN_FLAGS='--port 9000')
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CI ?=

ifeq ($(CI),true)
  WERROR := -DPIPEDIT_WERROR=ON
else
  WERROR :=
endif

.PHONY: all deps build test bench run clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(WERROR) $(CMAKE_FLAGS)
	cmake --build build -j $(JOBS)

test: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_C_COMPILER=clang -DPIPEDIT_FUZZ=ON $(WERROR) $(CMAKE_FLAGS)
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

bench: build
	bash bench/run_cpu.sh

PIPEDIT_DATA ?= ./data
RUN_FLAGS ?=

run: build
	build/bin/pipeditd --data-dir $(PIPEDIT_DATA) $(RUN_FLAGS)

clean:
	rm -rf build build-asan
