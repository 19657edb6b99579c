# The only entry points a user needs: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# No internet at run time: every tool's telemetry is off.
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo test test-spark lint format bench docs ui stop clean

$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv==0.13.8; }
	@$(BIN)/uv sync --frozen --quiet
	@touch $@

demo: $(VENV)/.synced
	$(BIN)/followup demo

# The dbt models' documentation (lineage, every column), as one static page.
docs: $(VENV)/.synced
	cd dbt_project && FOLLOWUP_DB=$(abspath $(or $(FOLLOWUP_DB),var/followup.duckdb)) \
		../$(BIN)/dbt docs generate --static --quiet $(if $(AS_OF),--vars '{as_of: $(AS_OF)}')
	@echo "dbt docs: $(CURDIR)/dbt_project/target/static_index.html"

lint: $(VENV)/.synced
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/sqlfluff lint benchmarks/sql
	cd dbt_project && FOLLOWUP_DB=:memory: ../$(BIN)/sqlfluff lint models

format: $(VENV)/.synced
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest

# The dbt project on a local Spark (dbt-spark, session method, Java 17) against DuckDB: the
# marts row for row (tests/building/test_spark.py, docs/scale-out.md).
test-spark: $(VENV)/.synced
	$(BIN)/pytest -m spark tests/building/test_spark.py

bench: $(VENV)/.synced
	$(BIN)/python -m benchmarks.run $(if $(BENCH_SIZE),--size $(BENCH_SIZE),) $(if $(BENCH_ONLY),--only $(BENCH_ONLY),)

# A local Prefect server and worker with every deployment of prefect.yaml; prints the UI address.
ui: $(VENV)/.synced
	$(BIN)/python -m ops.local start

stop: $(VENV)/.synced
	$(BIN)/python -m ops.local stop

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
