# Two commands do everything: `make book` and `make test` (see README.md).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= cpu

.PHONY: env book test unit clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e .
	touch $@

env: $(VENV)/.installed

unit: env
	$(PY) -m pytest -q tests

test: unit

clean:
	rm -rf runs book/_build
