# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
# The port `jitgate init` writes into a new .env (make run PORT=9000); an existing .env keeps its own.
PORT   ?= 8080
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
	$(BIN)/jitgate init --port $(PORT)

## run: install, write .env with fresh secrets and a demo agent (first time), start the broker with an
##      embedded Redis; it prints a console sign-in link for alice and the `jitgate demo` command
run: $(VENV)/.run .env
	@echo "starting jitgate; Ctrl-C stops it and its embedded Redis"
	$(BIN)/jitgate serve --first-run

## test: install the test dependencies, find a Chrome or Chromium for the browser tests (installing
##       Debian's chromium only where apt-get may run: see .ci/install-browser; openssh-server likewise for
##       the SSH certificate test: .ci/install-sshd), and run the whole suite
test: $(VENV)/.test
	./.ci/install-browser
	./.ci/install-sshd
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info build

.PHONY: bench bench-smoke

$(VENV)/.bench: $(VENV)/.run pyproject.toml
	$(BIN)/pip install -q -e ".[bench]"
	touch $@

## bench: measure the broker against the limit of its own parts (≤ 10 minutes); writes
##        bench/results/<date>.json and .md, the plot, and the tables in bench/README.md
bench: $(VENV)/.bench
	$(BIN)/python -m bench

## bench-smoke: the same harness with small numbers (under a minute; exits non-zero only if it breaks)
bench-smoke: $(VENV)/.bench
	$(BIN)/python -m bench --smoke
