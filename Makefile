# One command per job; .ci/run and the README use exactly these.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Run the suite on both server binaries: redis-server from PATH (falls back to the embedded valkey-server
# on a bare machine), then again on the embedded valkey-server.
PYTEST_ARGS ?=

.PHONY: install run test pytest lint typecheck bench clean

$(BIN)/pushgw: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/pushgw

run: install
	$(BIN)/pushgw dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# the README's test command and CI's: lint, types, then the suite on both server binaries
test: lint typecheck pytest

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)
	PUSHGW_TEST_REDIS=valkey $(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/pushgw bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

# A 20 s headless Locust smoke run against a private `pushgw dev` stack (free ports); CSV + HTML reports in
# build/loadtest/. Exits non-zero when the locustfile's failure-ratio / p99 policy fails.
.PHONY: loadtest-smoke
loadtest-smoke: install
	$(BIN)/python -m loadtest.smoke

# Opt-in, never part of `make test`: build the image with podman on a Debian base made here (mmdebstrap) and
# prove deploy/compose.yaml: redis, gateway, worker, simulator and Prometheus healthy, one signed event
# delivered. Root, Debian's podman + mmdebstrap + runc + aardvark-dns; a few minutes (bases cached).
.PHONY: image-check
image-check: install
	scripts/image-check
