# Two commands do all the set-up: `make train` and `make test` (`make test-fast` while developing).
# Both create or refresh .venv from the pinned versions in constraints.txt.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: setup train test test-fast lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

setup: $(STAMP)

train: $(STAMP)  ## train the default model; pass overrides with ARGS="optim=sgd ..."
	$(BIN)/python -m pricenet.train $(ARGS)

test: $(STAMP)  ## the whole test suite, slow tests included
	$(BIN)/ruff check src tests scripts conf
	$(BIN)/ruff format --check src tests scripts conf
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## the development loop: lint and every test not marked slow (< 3 min)
	$(BIN)/ruff check src tests scripts conf
	$(BIN)/python -m pytest -m "not slow" -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts conf

format: $(STAMP)
	$(BIN)/ruff format src tests scripts conf
	$(BIN)/ruff check --fix src tests scripts conf

bench: $(STAMP)  ## side-by-side benchmarks -> BENCHMARKS.md
	$(BIN)/python -m scripts.bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
