# The two commands a newcomer needs (see README):
#   make figures   set up .venv and regenerate every table and figure on the default (cpu) profile
#   make test      set up .venv and run the unit tests and the notebooks (smoke profile) under nbval,
#                  then check that no smoke table is stale (python -m ungerlib reproduce --check)
#   make determinism  run the smoke notebooks twice from empty caches and compare every table
PROFILE ?= cpu
PY := .venv/bin/python
# The smoke models are tiny: one torch thread is faster than two there (README, "How long"), and it
# leaves the other core free. Override with e.g. make test SMOKE_THREADS=all.
SMOKE_THREADS ?= 1

.venv/.installed: requirements.txt requirements-baselines.txt pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -r requirements.txt -r requirements-baselines.txt
	.venv/bin/pip install -q --no-deps -e .
	touch $@

setup: .venv/.installed

# ungerlib.warm trains the runs the notebooks read side by side (one torch thread each, WARM_JOBS worker
# processes, default one per core), then the notebooks run and only load them.
WARM_JOBS ?=

figures: setup
	$(PY) -m ungerlib prefill --profile $(PROFILE) $(if $(WARM_JOBS),--jobs $(WARM_JOBS))
	$(PY) -m ungerlib reproduce --profile $(PROFILE)
	$(PY) -m ungerlib reproduce --profile $(PROFILE) --check

# The smoke notebooks' outputs must name every artefact they read, under keys the current code
# computes (--allow-dirty: a local tree with uncommitted edits; CI's fresh clone is clean anyway).
test determinism: export UNGER_THREADS = $(SMOKE_THREADS)

test: setup
	$(PY) -m pytest -q tests
	$(PY) -m ungerlib reproduce --profile smoke --nbval
	$(PY) -m ungerlib reproduce --profile smoke --check --allow-dirty

# Every table of two smoke runs from empty caches is byte-identical (wall-clock *_s columns aside).
determinism: setup
	$(PY) tools/check_determinism.py --profile smoke

.PHONY: setup figures test determinism
