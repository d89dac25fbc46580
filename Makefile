# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test clean

$(VENV)/.run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.run pyproject.toml
	$(BIN)/pip install -q -e ".[test]"
	touch $@

.env: | $(VENV)/.run
	$(BIN)/jitgate init

## run: install, write .env with fresh secrets (first time), start the broker with an embedded Redis
run: $(VENV)/.run .env
	$(BIN)/jitgate serve

## test: install the test dependencies and run the whole suite
test: $(VENV)/.test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
