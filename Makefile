# Two commands do all the set-up on a fresh machine: `make study` and `make test`.
# Both install into a project-local virtual environment (.venv) first.
#
# TORCH: the torch requirement installed *before* everything else. Its default, the CPU build 2.13.0, lies on this
# kind of machine's disk; asking for it first keeps pip from resolving `torch` to a multi-GB CUDA build.
# On a GPU machine: `make test TORCH=torch` (or a pinned CUDA build).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH ?= torch==2.13.0
PROFILE ?= default
REAL ?= {}
VENV := .venv
# OpenMP threads wait passively: with busy-waiting, another busy process on the machine collapsed `make test` from
# 82 s to 958 s. Override with OMP_WAIT_POLICY=ACTIVE.
export OMP_WAIT_POLICY ?= PASSIVE
PY := $(VENV)/bin/python

.PHONY: install test test-fast lint study bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

# the inner loop: everything but the tests marked slow (smoke world, study, book, multi-process); about 100 s here
test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

study: install
	$(PY) -m congkit.study --profile $(PROFILE) --real '$(REAL)'

bench: install
	$(PY) benchmarks/decoding.py --json
	$(PY) benchmarks/import_time.py --json

clean:
	rm -rf book/_build .study
