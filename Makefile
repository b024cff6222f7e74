# Two commands do all the set-up on a fresh machine with python3 and make:
#   make run    import data/*.csv into the embedded PostgreSQL and list what is loaded
#   make test   the whole test suite (ruff, then pytest)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One stamp per install: `make run` installs only the CLI; `make test` adds the test and
# operator extras, so `make test` after `make run` still installs them (and the reverse
# installs nothing, since the extras include the CLI).
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint smoke tools bench docs clean

$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,operator]'
	@touch $(TEST_STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/snapshots import data/
	$(BIN)/snapshots list

lint: $(TEST_STAMP)
	$(BIN)/ruff check snapshots operator tests benchmarks charts docs

tools:
	@$(PYTHON) .ci/check_tools.py

test: $(TEST_STAMP) lint tools
	$(BIN)/pytest
	@if [ -n "$$SNAPSHOTS_SMOKE_DATABASE" ]; then \
		echo "smoke subset against $$($(BIN)/python -c 'import os,re;print(re.sub(r":[^:@/]*@",":***@",os.environ["SNAPSHOTS_SMOKE_DATABASE"]))')"; \
		SNAPSHOTS_TEST_DATABASE="$$SNAPSHOTS_SMOKE_DATABASE" $(BIN)/pytest -m smoke -p no:cacheprovider; \
	elif [ "$$CI" = "true" ]; then \
		echo "CI=true but SNAPSHOTS_SMOKE_DATABASE (Debian's PostgreSQL 15) is not set" >&2; exit 1; \
	else \
		echo "note: smoke subset against PostgreSQL 15 skipped (set SNAPSHOTS_SMOKE_DATABASE)"; \
	fi

docs: $(TEST_STAMP)
	$(BIN)/python docs/gen_cli_reference.py

bench: $(RUN_STAMP)
	$(BIN)/python benchmarks/import_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
