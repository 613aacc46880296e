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

.PHONY: run test bench chaos install clean help

help:
	@echo "make run    - run the node against the built-in simulator (no keys, no network)"
	@echo "make test   - run the test suite"
	@echo "make bench  - run every benchmark, write bench/results.json"
	@echo "make chaos  - seeded chaos runs against the whole node (SEEDS=N: seeds 1..N; CHAOS_SEEDS='3 17' reruns those)"
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

# `make test` runs a short chaos form (two seeds); this runs SEEDS of them, longer, with a table.
SEEDS ?= 10
chaos: $(STAMP)
	CHAOS_SEEDS="$${CHAOS_SEEDS:-$$(seq -s ' ' 1 $(SEEDS))}" CHAOS_FAULTS=$${CHAOS_FAULTS:-16} CHAOS_SPAN_S=$${CHAOS_SPAN_S:-30} \
		$(PY) -m pytest tests/chaos -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
