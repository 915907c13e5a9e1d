# The two commands a newcomer needs (see README):
#   make figures   set up .venv and regenerate every table and figure on the default (cpu) profile
#   make test      set up .venv and run the unit tests and the notebooks (smoke profile) under nbval
PROFILE ?= cpu
PY := .venv/bin/python

.venv/.installed: requirements.txt requirements-baselines.txt pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -r requirements.txt -r requirements-baselines.txt
	.venv/bin/pip install -q --no-deps -e .
	touch $@

setup: .venv/.installed

figures: setup
	$(PY) -m ungerlib.reproduce --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q tests
	$(PY) -m ungerlib.reproduce --profile smoke --nbval

.PHONY: setup figures test
