# The two everyday commands: `make verify` (the verification report) and `make test` (the suite).
# Each creates or reuses .venv and installs the project with its test extra when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: verify test bench gate lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

verify: $(STAMP)
	$(BIN)/nn-verify

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --run-slow

bench: $(STAMP)
	$(BIN)/python -m pytest -o addopts="" -p no:xdist --benchmark-only --benchmark-group-by=group tests/benchmarks

# The performance regression gate: an injected ~25% slowdown must trip it, then every gated
# kernel's paired ratio vs benchmarks/baselines.json (refresh: python -m benchmarks.gate --update-baseline).
gate: $(STAMP)
	$(BIN)/python -m pytest -q -p no:xdist -m gate tests/test_gate.py
	$(BIN)/python -m benchmarks.gate --save-history

lint: $(STAMP)
	$(BIN)/ruff check nn reference tests

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks build *.egg-info
