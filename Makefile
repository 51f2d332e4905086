# Two entry points (see README): `make demo` and `make test`; `make docs` builds the API
# reference into build/api (also part of `make test`, so a broken reference fails CI).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test docs install install-dev clean

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
	$(BIN)/ruff check symloss tests examples benchmarks docs
	$(BIN)/python docs/build_api.py build/api
	$(BIN)/python -m pytest -q

docs: install-dev
	$(BIN)/python docs/build_api.py build/api

clean:
	rm -rf $(VENV) runs .pytest_cache build/api
