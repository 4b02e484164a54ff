# quotapilot — the commands a newcomer needs. Everything runs from a local venv (.venv) that the
# targets create on first use; `make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-10)

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test,plot]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

## demo: install, then run the embedded default (simulator + daemon, 30 simulated days)
demo: $(STAMP)
	$(BIN)/quotapilot demo

## test: install (with the test and plot extras), then lint, type-check and run the whole test suite
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check daemon forecasting alerts tests bench

typecheck: $(STAMP)
	$(BIN)/mypy -p quotapilot.daemon -p quotapilot.forecasting -p quotapilot.alerts

unit: $(STAMP)
	$(BIN)/pytest -q -n 2 tests

## bench: every benchmark in bench/ (each prints one JSON object); adds the `bench` extra
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
