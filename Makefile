# The two commands of the README:  `make demo`  and  `make test`.
# Both create .venv and install everything on a fresh machine first; both are safe to re-run.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The shared real photographs, when this machine has them; tests that need them skip otherwise.
REAL_IMAGES ?= $(wildcard $(abspath ../shared/real-images))

.PHONY: install demo test lint bench system-deps clean

$(BIN)/xtalwatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/xtalwatch

# The main job on the embedded default: the synthetic imager feeding the real service.
demo: install
	$(BIN)/xtalwatch demo --fresh

# Debian packages the tests use as real tools (promtool, prometheus, systemd-analyze).
system-deps:
	bash .ci/install-system-deps.sh

test: install system-deps
	XTALWATCH_REQUIRE_POSTGRES=1 XTALWATCH_REAL_IMAGES=$${XTALWATCH_REAL_IMAGES:-$(REAL_IMAGES)} $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check daemon plugins tests bench docs

bench: install
	$(BIN)/python bench/bench_ingest.py

clean:
	rm -rf $(VENV) build *.egg-info demo
