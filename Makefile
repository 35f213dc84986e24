# slimmer: `make demo` and `make test` each set up everything they need on a fresh Debian machine.
# The distribution's interpreter when there is one: Debian's python3 (libpython linked in) ran
# `slimmer deps` over /usr/bin 1.13x faster here than a default pyenv build (docs/benchmarks.md).
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := bash scripts/system-deps.sh
# What building the ELF reader's C fast path (slimmer/_elfscan.c) needs; without it the build
# goes on and the Python reader reads every file.
BUILD_DEBS := gcc python3-dev

# Debian packages: what the tests compile, pack and run (qemu-user-static runs the arm64, armhf
# and riscv64 images: the tests register its binfmt handlers while they run), the engines they
# load images into, and what the benchmark compares against.
TOOLS_DEBS   := make gcc g++ gcc-multilib libc6-dev musl-tools binutils mmdebstrap qemu-user-static \
                bubblewrap strace
PROGRAM_DEBS := jq curl sqlite3 openssl bc lua5.4 xz-utils gzip coreutils ffmpeg \
                python3 git perl nginx redis-server tzdata ca-certificates \
                ruby php-cli php-mbstring imagemagick nodejs postgresql fonts-dejavu-core \
                units file python3-venv openjdk-17-jre-headless tcl vim cowsay python3-pygments \
                yq
ENGINE_DEBS  := docker.io containerd runc podman skopeo umoci
# `slimmer push` is tested against a real registry (distribution 2.8) with bcrypt htpasswd.
REGISTRY_DEBS := docker-registry apache2-utils
TEST_DEBS    := $(TOOLS_DEBS) $(PROGRAM_DEBS) $(ENGINE_DEBS) $(REGISTRY_DEBS)
BENCH_DEBS   := gcc pax-utils python3-pyelftools ffmpeg docker.io containerd runc mmdebstrap
DEMO_DEBS    := gcc libc6-dev docker.io containerd runc

.PHONY: install test lint bench demo clean

$(VENV)/.installed: pyproject.toml slimmer/_elfscan.c
	$(DEPS) $(BUILD_DEBS)
	$(PYTHON) -m venv $(VENV) || ($(DEPS) python3-venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

# Byte-compile even where PYTHONDONTWRITEBYTECODE is set: start-up time is part of the
# benchmarks (docs/benchmarks.md).
install: $(VENV)/.installed
	$(BIN)/python -m compileall -q slimmer

test: install
	$(DEPS) $(TEST_DEBS)
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check slimmer tests bench
	$(BIN)/mypy

bench: install
	$(DEPS) $(BENCH_DEBS)
	$(BIN)/python -m bench.bench_deps --out docs/benchmarks-latest.md
	# --favoured: the kernel shares the CPUs between sessions first (autogroup), so one busy
	# process in another session leaves pack's threads one core (docs/benchmarks.md).
	$(BIN)/python -m bench.bench_pack --favoured --out docs/benchmarks-latest.md
	$(BIN)/python -m bench.bench_startup --out docs/benchmarks-latest.md

demo: install
	$(DEPS) $(DEMO_DEBS)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache slimmer/*.so
