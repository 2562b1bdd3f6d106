# pit: `make demo` and `make test` each set everything up first, so on a fresh machine each is
# one command. PYTHON picks the interpreter the venv is built from (>= 3.10).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(shell command -v uv 2>/dev/null)

.PHONY: setup demo test test-all test-ray protos check-protos help-pages lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if [ -z "$(UV)" ] && ! $(PYTHON) -m uv --version >/dev/null 2>&1; then \
		echo "uv not found: installing it with pip"; \
		$(PYTHON) -m pip install --quiet uv; \
	fi
	@UV_BIN="$$(command -v uv || echo '$(PYTHON) -m uv')"; \
	$$UV_BIN venv --quiet --allow-existing --python $(PYTHON) $(VENV) && \
	{ $$UV_BIN pip uninstall --quiet --python $(PY) pit 2>/dev/null || true; } && \
	$$UV_BIN pip install --quiet --reinstall-package pit-pools --python $(PY) -e '.[dev]'
	@# Bytecode for the venv and pit's own modules: where PYTHONDONTWRITEBYTECODE is set
	@# (containers, the development VM) a module without a .pyc is compiled again by every
	@# process that imports it (`pit run` of one call: ~0.5 s of CPU)
	@$(PY) -m compileall -q -j 0 runtime snakecli \
		"$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
	@touch $@

demo: setup
	cd examples && ../$(VENV)/bin/pit run quickstart.py

test: setup
	$(PY) scripts/gen_protos.py --check
	$(PY) scripts/gen_help.py --check
	$(PY) -m pytest -q

# The Ray backend's tests: installs the `ray` extra into the venv (not in the base install),
# then runs the tests marked `ray` (each starts and stops a private two-node cluster).
test-ray: setup
	@UV_BIN="$$(command -v uv || echo '$(PYTHON) -m uv')"; \
	$$UV_BIN pip install --quiet --python $(PY) -e '.[dev,ray]'
	$(PY) -m pytest -q -m ray

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

protos: setup
	$(PY) scripts/gen_protos.py

check-protos: setup
	$(PY) scripts/gen_protos.py --check

# the --help pages `pit` prints before Typer loads (snakecli/entry.py): after changing a command
help-pages: setup
	$(PY) scripts/gen_help.py

lint: setup
	$(PY) -m ruff check runtime snakecli scripts tests
	$(PY) -m mypy runtime snakecli
	$(PY) scripts/check_structure.py

# ARGS: passed to scripts/bench.py, e.g. make bench ARGS=--quick (a smoke run) or ARGS=--json
bench: setup
	$(PY) scripts/bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pit .pytest_cache .ruff_cache .mypy_cache
