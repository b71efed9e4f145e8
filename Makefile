# The two commands of the README: `make run` (main job on the embedded default dataset) and
# `make test` (lint, format check, tests). Both create the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -c constraints.txt -e '.[dev,plots]'
	# MovieLens 100K, the embedded default dataset, ships inside the recbole wheel; only its
	# data files are used, so its (old, conflicting) dependencies are not installed.
	$(PY) -m pip install --no-deps recbole==1.2.1
	touch $@

run: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m distributed_rec run --config=default $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	HF_HUB_OFFLINE=1 $(PY) tests/run_suite.py --durations=15 $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
