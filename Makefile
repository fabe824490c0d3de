# keywheel — two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make run    the main job (gateway / chat with .env keys; the demo when there are none)
#   make test   lint, types and the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the suite needs: nginx (with njs) and wrk for the benchmark smoke test.
# The suite runs in this many processes (pytest-xdist): its tests mostly wait on sockets and
# subprocesses, so 2 workers on 2 cores nearly halve its time.  TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2
SYSDEPS := nginx wrk libnginx-mod-http-js redis-server chromium
# ... and npm, to install Claude Code for its test, unless an npm is already on the PATH (NodeSource's
# nodejs bundles its own and conflicts with Debian's npm package).
NODEDEPS := nodejs npm
# Claude Code, pinned, for tests/gateway/test_claude_code.py (a native binary; npm only fetches it).
# Its test skips when npm cannot reach the registry, except under CI=true, where it fails.
CLAUDE_CODE_VERSION := 2.1.332
NODE_DIR := .cache/node
CLAUDE_CODE := $(NODE_DIR)/claude-code-$(CLAUDE_CODE_VERSION)

.PHONY: run test lint typecheck unit sysdeps bench fuzz clean claude-code

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

# --ignore-scripts: the package's postinstall only links the binary npm already unpacked (and wants
# a newer node than Debian's); the test finds the binary itself.
$(CLAUDE_CODE):
	@command -v npm >/dev/null || { echo "installing Debian packages: $(NODEDEPS)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(NODEDEPS) >/dev/null; } || true
	@mkdir -p $(NODE_DIR)
	@command -v npm >/dev/null && npm install --prefix $(NODE_DIR) --no-save --no-audit --no-fund --ignore-scripts \
	  --loglevel=error --fetch-timeout=60000 --fetch-retries=1 \
	  @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) >/dev/null \
	  && touch $@ || echo "npm could not install Claude Code $(CLAUDE_CODE_VERSION): its test will skip (fail under CI=true)"

claude-code: $(CLAUDE_CODE)

# The suite under coverage: branch coverage of src/keywheel, in-process and in every Python subprocess
# the tests start (pyproject's [tool.coverage.run]); the report fails under its floor (fail_under).
unit: $(VENV)/.installed-dev sysdeps claude-code
	@rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -q -n $(TEST_WORKERS)
	@$(BIN)/coverage combine -q
	$(BIN)/coverage report

test: lint typecheck unit

bench: $(VENV)/.installed-dev sysdeps
	bash bench/run.sh

# The fuzz suites at length (make test runs them with a fixed seed and few examples):
# KEYWHEEL_FUZZ_EXAMPLES examples per property, same derandomized sequence each run.
KEYWHEEL_FUZZ_EXAMPLES ?= 5000
fuzz: $(VENV)/.installed-dev
	KEYWHEEL_FUZZ_EXAMPLES=$(KEYWHEEL_FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz -q -s -rxX -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cache .coverage .coverage.*
