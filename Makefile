# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The demo needs symloss and its own dependencies only; the tests need the dev extras.
install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"

# A task where the loss's shape matters: 20% of the targets carry a heavy one-sided tail and
# the metric is MAE; the CLI ends with the learned loss against the tuned baseline.
demo: install
	$(BIN)/symloss search outliers --metric mae --preset quick --seed 0

test: install-dev
	$(BIN)/ruff check symloss tests examples benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
