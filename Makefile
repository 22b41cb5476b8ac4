# prodclone: `make demo` and `make test` work on a fresh clone (Python >= 3.11, no services needed).
PY ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo airflow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@test -n "$(PY)" || { echo "prodclone needs Python >= 3.11 (set PY=/path/to/python3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest

demo: install
	$(BIN)/python scripts/demo.py

airflow: install
	$(BIN)/python scripts/airflow_local.py

bench: install
	$(BIN)/python bench/export_throughput.py
	$(BIN)/python bench/clone_vs_restore.py

clean:
	-$(BIN)/python -c "from prodclone import devpg; devpg.stop(); devpg.stop(devpg.TEST_DIR)" 2>/dev/null
	rm -rf .prodclone
