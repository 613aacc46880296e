# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv if it is missing and install the pinned project into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Loopback traffic must never be routed to a proxy (websocket-client >= 1.9
# no longer exempts localhost by itself).
export NO_PROXY := 127.0.0.1,localhost
export no_proxy := 127.0.0.1,localhost

.PHONY: run test bench install clean help

help:
	@echo "make run    - run the node against the built-in simulator (no keys, no network)"
	@echo "make test   - run the test suite"
	@echo "make bench  - run every benchmark, write bench/results.json"
	@echo "make clean  - remove .venv and caches"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) main.py run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
