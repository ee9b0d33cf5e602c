# make demo / make test from a fresh clone: each sets up .venv first.
# Order matters: torch, then torch-scatter compiled against it without build
# isolation (it has no wheels), then the project with pinned versions.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
PINS   := -c constraints.txt
export OVLIFT_PROGRESS ?= $(if $(CI),0,1)

.PHONY: setup demo test docs constraints clean

setup: $(VENV)/.ovlift

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PINS) setuptools wheel ninja
	$(PIP) install $(PINS) torch==2.14.1 torchvision==0.29.1
	touch $@

$(VENV)/.scatter: $(VENV)/.torch
	MAX_JOBS=$$(nproc) $(PIP) install $(PINS) --no-build-isolation torch-scatter
	touch $@

$(VENV)/.ovlift: $(VENV)/.scatter pyproject.toml constraints.txt
	$(PIP) install $(PINS) -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/ovlift demo --workdir work/demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

docs: setup
	$(VENV)/bin/ovlift schema > docs/cache_schema.md

constraints: setup
	{ head -n 2 constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^ovlift'; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) work *.egg-info
