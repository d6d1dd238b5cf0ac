# One task runner, used verbatim by README.md and .ci/run.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint typecheck check demo bench clean constraints

$(STAMP): pyproject.toml contrib/prometheus/pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,cli]' -e contrib/prometheus
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not redis and not slow"

lint: $(STAMP)
	$(BIN)/ruff check taskq tests benchmarks contrib examples
	$(BIN)/ruff format --check taskq tests benchmarks contrib examples

typecheck: $(STAMP)
	$(BIN)/mypy taskq
	$(BIN)/mypy --strict contrib/prometheus/taskq_prometheus

check: lint typecheck test

demo: $(STAMP)
	$(BIN)/python -m examples.demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# After upgrading packages in .venv and passing `make check`: pin what passed.
constraints: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
		| grep -v -e '^-e' -e '^taskq'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
