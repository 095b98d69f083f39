# The two commands of the README:
#   make demo   create .venv, install everything, run the curation end to end on embedded defaults
#   make test   create .venv, install everything, run the test suite (what CI runs)
# and, while working: make test-fast (unit tests only: no end-to-end runs, real data or Airflow).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# torch first and pinned for every later install: anything looser pulls a multi-GB CUDA build.
CONSTRAINT := -c requirements/constraints.txt
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast bench clean airflow-venv chromium
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/*.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install $(CONSTRAINT) -r requirements/base.txt
	$(PIP) install $(CONSTRAINT) --no-deps -r requirements/nodeps.txt
	for f in requirements/extra-*.txt; do if [ -e "$$f" ]; then $(PIP) install $(CONSTRAINT) -r "$$f" || exit 1; fi; done
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

# Optional: Airflow in its own venv for dags/ (tests/dags/test_dags.py builds it on demand too).
AIRFLOW_VENV := .venv-airflow
airflow-venv: $(AIRFLOW_VENV)/.installed

$(AIRFLOW_VENV)/.installed: requirements/airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PY) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip -q --disable-pip-version-check install -r requirements/airflow.txt
	touch $@

# Debian's chromium for the audit report's browser test. Best effort: it needs root and the
# Debian mirror; without it the browser tests skip with a reason instead of failing.
chromium:
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser tests will skip"

demo: venv
	RAY_AUTH_MODE=disabled $(BIN)/mocha demo --output demo_out

test: venv airflow-venv chromium
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

test-fast: venv
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m "not slow and not realdata and not airflow" $(PYTEST_ARGS)

bench: venv
	for f in benchmarks/bench_*.py; do $(BIN)/python "$$f" || exit 1; done

clean:
	rm -rf $(VENV) demo_out .pytest_cache
