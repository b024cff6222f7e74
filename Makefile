# Two commands do all the set-up on a fresh machine with python3 and make:
#   make run    import data/*.csv into the embedded PostgreSQL and list what is loaded
#   make test   the whole test suite (ruff, then pytest)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint smoke tools bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,operator]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/snapshots import data/
	$(BIN)/snapshots list

lint: $(STAMP)
	$(BIN)/ruff check snapshots operator tests benchmarks charts

tools:
	@$(PYTHON) .ci/check_tools.py

test: $(STAMP) lint tools
	$(BIN)/pytest
	@if [ -n "$$SNAPSHOTS_SMOKE_DATABASE" ]; then \
		echo "smoke subset against $$($(BIN)/python -c 'import os,re;print(re.sub(r":[^:@/]*@",":***@",os.environ["SNAPSHOTS_SMOKE_DATABASE"]))')"; \
		SNAPSHOTS_TEST_DATABASE="$$SNAPSHOTS_SMOKE_DATABASE" $(BIN)/pytest -m smoke -p no:cacheprovider; \
	elif [ "$$CI" = "true" ]; then \
		echo "CI=true but SNAPSHOTS_SMOKE_DATABASE (Debian's PostgreSQL 15) is not set" >&2; exit 1; \
	else \
		echo "note: smoke subset against PostgreSQL 15 skipped (set SNAPSHOTS_SMOKE_DATABASE)"; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/import_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
