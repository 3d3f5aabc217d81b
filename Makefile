# Two commands on a fresh machine: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
export CMAKE_ARGS

.PHONY: run test setup setup-test lint bench screenshots clean

run: setup
	$(PY) -m workbench

test: setup-test
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

setup:
	@VENV=$(VENV) bash tools/bootstrap.sh app

setup-test:
	@VENV=$(VENV) bash tools/bootstrap.sh test

lint: setup-test
	$(PY) -m ruff check workbench tests

bench: setup
	$(PY) -m workbench.bench throughput
	$(PY) -m workbench.bench turns
	$(PY) -m workbench.bench stop
	$(PY) -m workbench.bench fit
	$(PY) -m workbench.bench download

screenshots: setup-test
	QT_QPA_PLATFORM=offscreen $(PY) -m workbench.ui.screenshots docs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
