# One place for set-up: a venv in .venv, the package with its pinned dependencies, models.
# The first `make` compiles llama.cpp (llama-cpp-python ships as source: about 7-9 minutes on 2 cores).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CMAKE_ARGS ?= -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: setup demo test test-fast bench clean-runs

$(BIN)/heal: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first and pinned: the CPU build lies on disk; an unpinned torch would pull a CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $@

setup: $(BIN)/heal

# The main job: the whole pipeline (`heal run`) on the embedded default config.
demo: setup
	$(BIN)/heal models prepare qwen2.5-coder-1.5b smollm2-135m
	$(BIN)/heal run

# The whole test suite, slow end-to-end tests included (what CI runs).
test: setup
	$(BIN)/heal models prepare smollm2-135m
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/heal models prepare smollm2-135m
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/heal models prepare smollm2-135m qwen2.5-coder-1.5b
	$(BIN)/python benchmarks/throughput.py

clean-runs:
	rm -rf runs
