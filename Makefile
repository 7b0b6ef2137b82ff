# The two commands a newcomer runs: `make demo` and `make test`.
# Both create .venv on first use; `make test` also installs the Debian packages the tests need
# (when run as root and they are missing).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo.mp4

.PHONY: demo test venv sysdeps lint types pytest clean

venv: $(STAMP)

# torch is pinned first: a bare `torch` pulls a multi-GB CUDA build; 2.13.0 is the local CPU wheel.
$(STAMP): pyproject.toml sdk/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e '.[dev]' -e ./sdk 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, unison_stream, unison_sdk; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $@

sysdeps:
	@bash scripts/sysdeps.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: venv
	$(VENV)/bin/mypy unison_stream sdk/unison_sdk tests

pytest: venv
	$(PY) -m pytest -q

test: venv sysdeps lint types pytest

demo: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/unison-stream render "Hello there <wave> nice to see you <clap>" -o $(DEMO_OUT)
	@echo "demo: open $(DEMO_OUT) (see README.md for what it shows at this stage)"

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
