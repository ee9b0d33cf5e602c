# make demo / make test from a fresh clone: each sets up .venv first.
# Order matters: torch, then torch-scatter compiled against it without build
# isolation (it has no wheels), then the project with pinned versions.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CI's clean machine gains nothing from pip's cache and once ran out of disk installing
# (several GB of CUDA wheels): there, nothing is cached.
PIP    := $(PY) -m pip --disable-pip-version-check $(if $(CI),--no-cache-dir)
PINS   := -c constraints.txt
export OVLIFT_PROGRESS ?= $(if $(CI),0,1)

.PHONY: setup demo test gpu-check docs constraints clean clean-work

setup: $(VENV)/.ovlift

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PINS) setuptools wheel ninja
	$(PIP) install $(PINS) torch==2.14.1 torchvision==0.29.1
	touch $@

# With nvcc on the PATH torch-scatter is built with CUDA kernels (FORCE_CUDA: the build
# machine may have no GPU; --no-cache-dir: pip's cached CPU wheel has the same name);
# if that build fails (nvcc's CUDA not torch's) it falls back to a CPU build, and ovlift
# scatters CUDA tensors with torch's own scatter_reduce (make gpu-check says which).
$(VENV)/.scatter: $(VENV)/.torch
	if command -v nvcc >/dev/null; then \
	  MAX_JOBS=$$(nproc) FORCE_CUDA=1 $(PIP) install $(PINS) --no-build-isolation --no-cache-dir torch-scatter \
	  || { echo "torch-scatter: CUDA build failed, building for the CPU"; \
	       MAX_JOBS=$$(nproc) $(PIP) install $(PINS) --no-build-isolation torch-scatter; }; \
	else \
	  MAX_JOBS=$$(nproc) $(PIP) install $(PINS) --no-build-isolation torch-scatter; \
	fi
	touch $@

# nuscenes-devkit 1.2.0 (the `nuscenes` dataset reader) declares numpy<2 and
# Shapely~=2.0.3, but what ovlift uses of it (tables, splits, lidarseg classes)
# works with our numpy 2 and never imports Shapely; installed with its
# dependencies it would downgrade numpy under torch. So it goes in --no-deps,
# after the project, and the imports it needs (pyquaternion, opencv, ...) are
# listed in pyproject.toml.
# Last, ovlift's C++ CPU kernels (ovlift/kernels/native.cpp) are compiled into torch's
# extension cache, about a minute, so that no first run or test pays for it; they need the
# compiler and ninja that torch-scatter needed.
$(VENV)/.ovlift: $(VENV)/.scatter pyproject.toml constraints.txt
	$(PIP) install $(PINS) -e '.[dev]'
	$(PIP) install $(PINS) --no-deps nuscenes-devkit==1.2.0
	$(PY) -c "from ovlift.kernels import native; assert native.available('cpu'), 'the C++ CPU kernels did not build'"
	touch $@

demo: setup
	$(VENV)/bin/ovlift demo --workdir work/demo

# The docs site is built in strict mode into a scratch folder: a broken link fails the tests.
# pytest runs two workers (CI has 2 cores; tests/conftest.py gives each worker one torch
# thread), whole files per worker so module fixtures are built once: 11 minutes against 18.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	site=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir "$$site"; rc=$$?; rm -rf "$$site"; exit $$rc
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# The GPU paths and benchmarks on a lent GPU, one table; without CUDA it says so, exit 0.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

# docs/cache_schema.md is generated from the stage specs; the site goes to site/.
docs: setup
	$(VENV)/bin/ovlift schema > docs/cache_schema.md
	$(VENV)/bin/mkdocs build --strict

constraints: setup
	{ head -n 2 constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^ovlift'; } > constraints.new && mv constraints.new constraints.txt

# Build products only. work/ holds every plan's store by default (hours of results): clean-work
# deletes it after asking, and off a terminal (CI, scripts) only with YES=1.
clean:
	rm -rf $(VENV) site *.egg-info

clean-work:
	@if [ "$(YES)" = 1 ]; then rm -rf work; echo "deleted work/"; \
	elif [ -t 0 ]; then \
	  printf 'Delete work/ (every plan'"'"'s store by default)? [y/N] '; read answer; \
	  case "$$answer" in [yY]|[yY][eE][sS]) rm -rf work; echo "deleted work/";; *) echo "kept work/";; esac; \
	else echo "make clean-work: not on a terminal, so not asking; run 'make clean-work YES=1' to delete work/" >&2; exit 1; \
	fi
