# Two commands matter: `make demo` and `make test`. Both build .venv/ first when it is
# missing or pyproject.toml is newer than it. pip (not uv/poetry) so that the CPU torch
# wheel on local disk is used instead of a multi-GB CUDA download.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out
RESULTS_OUT ?= results_out

.PHONY: venv demo results test test-slow lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# everything, its page demo.md included, goes to DEMO_OUT (scripts/demo.py --publish-docs: docs/)
demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out $(DEMO_OUT)

# docs/RESULTS.md from docs/results/runs/*/result.json; resumes (finished runs are kept there)
results: $(STAMP)
	$(BIN)/python scripts/results.py --out $(RESULTS_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(RESULTS_OUT)
