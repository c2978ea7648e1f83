# The two commands of the README: `make reproduce` and `make test`. Each creates .venv on first use (the pins of
# constraints.txt, every extra) and reinstalls the package only when pyproject.toml or constraints.txt changes.

PYTHON ?= python3.11
PROFILE ?= quick
JOBS ?= 1
TEST_WORKERS ?= 2
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: reproduce test lab refresh env clean-runs

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[notebooks,export,test]'
	$(PY) -m ipykernel install --sys-prefix --name aslib --display-name "Python (aslib)"
	@touch $@

env: $(INSTALLED)

## Execute every notebook under profiles/$(PROFILE).yaml into runs/$(PROFILE)/ ($(JOBS) at once), publish its results files to
## results/$(PROFILE)/ and regenerate figures/; then the README's results section and notebook 06 (which show
## every published profile) are rewritten from results/.
reproduce: $(INSTALLED)
	$(PY) -m aslib.runner.reproduce --profile $(PROFILE) --jobs $(JOBS)
	$(PY) -m aslib.study.published --readme
	$(PY) -m aslib.runner.reproduce --refresh notebooks/06_results.ipynb

## Unit tests, the notebooks run through the runner, and nbval on the committed notebooks. nbval runs on
## copies in a temporary tree (its own figures/ and runs/), so a test run never rewrites a tracked file.
## pytest-xdist runs whole test files on TEST_WORKERS processes at once (TEST_WORKERS=0: in one process):
## --dist loadfile keeps each file, so every notebook's cells, on one worker and in order, and the slowest
## files go first (tests/conftest.py orders them; --no-loadscope-reorder keeps that order). The copies are
## passed as a folder: notebook files named one by one outside --rootdir get clashing node ids ("::Cell 0"),
## and xdist would then run only one of them.
test: $(INSTALLED)
	@tree=$$(mktemp -d) && trap 'rm -rf "$$tree"' EXIT && \
	$(PY) -m aslib.runner.reproduce --copy-notebooks "$$tree/nbval" && \
	$(PY) -m pytest tests "$$tree/nbval/notebooks" --nbval-lax --nbval-current-env -p no:cacheprovider \
		--rootdir . --durations=10 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## JupyterLab on notebooks/ with the project's kernel (extra options: make lab LAB_ARGS=--no-browser).
LAB_ARGS ?=
lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## Re-execute a notebook in place with its stored defaults: make refresh NB=notebooks/01_....ipynb
refresh: $(INSTALLED)
	$(PY) -m aslib.runner.reproduce --refresh $(NB)

clean-runs:
	rm -rf runs/
