# Two entry points: `make demo` and `make test`. Each creates the pinned dev environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fx_upscale-installed
export OMP_NUM_THREADS ?= 1

.PHONY: venv demo test bench clean

$(STAMP): constraints-dev.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints-dev.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m fx_upscale.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal

clean:
	rm -rf $(VENV) build *.egg-info
