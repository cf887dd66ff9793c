# Entry points: `make demo`, `make test` (the whole suite, as CI runs it), `make test-fast` (the edit loop) and
# `make lint`. Each creates the pinned dev environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fx_upscale-installed
export OMP_NUM_THREADS ?= 1

.PHONY: venv demo test test-fast lint bench clean

$(STAMP): constraints-dev.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints-dev.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m fx_upscale.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal

# The edit loop: every test module, in about 2 minutes on 2 cores (`make test`: 20). Of the tests marked slow
# (torchvision models, torch.compile, the accuracy experiment), only those whose name or parameters say resnet18 run,
# less its inductor compile (40 s); the random-model fuzz runs its "mixed" profile only (the other three: 170 s);
# the segmentation / detection model sweep is left out (its handler, folding and refusal tests run).
# `-k` matches marker names as well as test names, so a test whose name contains "slow" counts as slow here.
FAST_FUZZ := tests/test_random_models.py::test_random_models
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal -k "(not slow or resnet18) and not inductor and not exports_exactly_and_shrinks" \
		--deselect "$(FAST_FUZZ)[structured]" --deselect "$(FAST_FUZZ)[branchy]" --deselect "$(FAST_FUZZ)[per_channel]"

LINT_PATHS := fx_upscale tests benchmarks passes
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy fx_upscale

clean:
	rm -rf $(VENV) build *.egg-info
