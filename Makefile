# The two commands anyone needs: `make run` and `make test` (plus `make check` before a commit).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
HOST ?= 127.0.0.1
PORT ?= 8000
NODE_TEST_DIRS := tests/system/graphql_http tests/system/browser tests/system/jwks \
	tests/system/federation tests/system/apollo_client
# GraphiQL's bundles (usergraph/graphiql): from npm, pinned by the committed lock file.
ASSETS_DIR := usergraph/graphiql

.PHONY: run test check format schema migrate bench profile faults assets clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "usergraph needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

# npm ci checks every package against the integrity hashes of package-lock.json. Without npm
# the server still runs; its GraphiQL page then says how to install it.
assets: $(ASSETS_DIR)/node_modules/.package-lock.json

$(ASSETS_DIR)/node_modules/.package-lock.json: $(ASSETS_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(ASSETS_DIR) && npm ci --no-audit --no-fund --silent --ignore-scripts; \
	else echo "note: npm is not installed: GraphiQL's files are missing (the API works)"; fi

run: $(VENV)/.installed-run assets
	$(BIN)/usergraph migrate
	$(BIN)/usergraph serve --host $(HOST) --port $(PORT)

migrate: $(VENV)/.installed-run
	$(BIN)/usergraph migrate

# The browser tests (tests/system/test_pages.py) drive Debian's chromium; as root it is
# installed here when missing, elsewhere those tests skip and say why.
test: $(VENV)/.installed-dev assets
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
		|| apt-get install -y -q --no-install-recommends chromium >/dev/null \
		|| { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; } \
		|| echo "note: chromium could not be installed; the browser tests will skip"
	@# The JavaScript peers of the system tests, pinned by their package-lock.json.
	@for dir in $(NODE_TEST_DIRS); do \
		[ -d $$dir/node_modules ] || ! command -v npm >/dev/null 2>&1 \
			|| (cd $$dir && npm ci --no-audit --no-fund --silent) || exit 1; \
	done
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy usergraph

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: $(VENV)/.installed-run
	$(BIN)/usergraph export-schema --output schema.graphql

# The benchmark (bench/run.py): seeds PostgreSQL at DATABASE_URL (default: usergraph_bench on
# the local server, usergraph_bench_10000 when quick), runs usergraph against the floor app with
# wrk, prints the table and writes bench/results.json. BENCH_QUICK=1: one short round on 10,000
# users (under 1.5 minutes). BENCH_ARGS: more options (bench/run.py --help).
bench: $(VENV)/.installed-dev
	@command -v wrk >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || apt-get install -y -q wrk \
		|| { apt-get update -q && apt-get install -y -q wrk; } || true
	BENCH_QUICK="$(BENCH_QUICK)" $(BIN)/python bench/run.py $(BENCH_ARGS)

# Faults survived, with figures (bench/faults.py, issue 12): dead pooled connections, a killed
# worker, SIGTERM with requests in flight, SIGKILL mid-writes and a restart, a soak, timing.
# Needs PostgreSQL and Redis on 127.0.0.1 (FAULTS_POSTGRES_URL, FAULTS_REDIS_URL); every
# scenario gets a throwaway database and Redis prefix, removed afterwards. Prints one table;
# exits 1 when a goal is not met. About 18 minutes; FAULTS_SOAK_SECONDS=60 (10 minutes by
# default) and FAULTS_TIMING_ATTEMPTS=50 (200) make it about 4. FAULTS_ARGS="--only soak".
# Where a request's CPU time goes, by library (py-spy under wrk): PROFILE_ARGS="--scenario me".
profile: $(VENV)/.installed-dev
	$(BIN)/python bench/profile.py $(PROFILE_ARGS)

faults: $(VENV)/.installed-dev
	FAULTS_SOAK_SECONDS="$(FAULTS_SOAK_SECONDS)" FAULTS_TIMING_ATTEMPTS="$(FAULTS_TIMING_ATTEMPTS)" \
		$(BIN)/python bench/faults.py $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(ASSETS_DIR)/node_modules
