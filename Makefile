# keywheel — two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make run    the main job (gateway / chat with .env keys; the demo when there are none)
#   make test   lint, types and the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the suite needs: nginx (with njs) and wrk for the benchmark smoke test.
SYSDEPS := nginx wrk libnginx-mod-http-js

.PHONY: run test lint typecheck unit sysdeps bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

sysdeps:
	@missing=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(VENV)/.installed
	$(BIN)/keywheel run

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev sysdeps
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(VENV)/.installed-dev sysdeps
	bash bench/run.sh

# The fuzz suites at length (make test runs them with a fixed seed and few examples):
# KEYWHEEL_FUZZ_EXAMPLES examples per property, same derandomized sequence each run.
KEYWHEEL_FUZZ_EXAMPLES ?= 5000
fuzz: $(VENV)/.installed-dev
	KEYWHEEL_FUZZ_EXAMPLES=$(KEYWHEEL_FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz -q -s -rxX -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
