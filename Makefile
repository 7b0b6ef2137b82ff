# The two commands a newcomer runs: `make demo` and `make test`.
# Both create .venv on first use; `make test` also installs the Debian packages the tests need
# (when run as root and they are missing).
SHELL := /bin/bash
# pipefail: a failed step of a pipe (a pip install whose output is filtered) fails the recipe
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_CHECKPOINT ?=
# pip's output less its "… is ignored" notices; grep finding no line to print is not a failure
QUIET := 2>&1 | { grep -v "is ignored" || true; }

.PHONY: demo test venv sysdeps lint types pytest clean

venv: $(STAMP)

# torch is pinned first: a bare `torch` pulls a multi-GB CUDA build; 2.13.0 is the local CPU wheel.
$(STAMP): pyproject.toml sdk/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 $(QUIET)
	$(PY) -m pip install -q -e '.[dev]' -e ./sdk $(QUIET)
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

# The streaming server on 127.0.0.1:8080 (loopback only); prints the page URL with a local API
# key. DEMO_CHECKPOINT=path serves that checkpoint; without it, the current (untrained) model.
demo: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/unison-stream serve $(if $(DEMO_CHECKPOINT),--checkpoint $(DEMO_CHECKPOINT)) server.host=127.0.0.1 server.port=8080

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
