# prodclone: `make demo` and `make test` work on a fresh clone (Python >= 3.11, no services needed).
# The probe's errors (e.g. pyenv shims for versions that are not installed) are not ours to print.
PY ?= $(shell for p in python3.13 python3.12 python3.11 python3; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install dev test test-fast lint fuzz demo airflow stop bench clean

# Runtime only (Airflow, providers, the engine, the embedded Postgres): what demo and airflow need.
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml setup.py plugins/prodclone/masking/_kernel.c
	@test -n "$(PY)" || { echo "prodclone needs Python >= 3.11 (set PY=/path/to/python3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Runtime plus test and lint tools (pytest, moto, ruff, selenium).
dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt -c constraints.txt
	touch $@

lint: dev
	$(BIN)/ruff check .

test: dev lint
	$(BIN)/pytest
	$(BIN)/python tests/fuzz/fuzz_kernel.py -runs=600 -max_total_time=60

# The kernel against the Python rewriter, coverage-guided, for longer (FUZZ_SECONDS=...); the differential
# hypothesis test takes PRODCLONE_FUZZ_EXAMPLES=N for a longer run too.
FUZZ_SECONDS ?= 300
fuzz: dev
	$(BIN)/python tests/fuzz/fuzz_kernel.py -max_total_time=$(FUZZ_SECONDS)

# The fast lane: unit tests only, without Postgres or Airflow (tests/unit minus the `db` marker).
test-fast: dev
	$(BIN)/pytest -q tests/unit -m "not db"

demo: install
	$(BIN)/python scripts/demo.py

airflow: install
	$(BIN)/python scripts/airflow_local.py

# Stops what `make airflow` started (its whole process tree) and the embedded Postgres servers.
stop:
	-@test ! -x $(BIN)/python || $(BIN)/python scripts/airflow_local.py stop
	-@test ! -x $(BIN)/python || $(BIN)/python -c "from prodclone import devpg; devpg.stop(); devpg.stop(devpg.TEST_DIR)" 2>/dev/null

bench: install
	$(BIN)/python bench/export_throughput.py
	$(BIN)/python bench/clone_vs_restore.py
	$(BIN)/python bench/verify_statistics.py
	$(BIN)/python bench/scale_out.py

clean: stop
	rm -rf .prodclone
