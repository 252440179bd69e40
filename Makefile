# Two commands do all the set-up: `make demo` and `make test`.
# TORCH picks the PyTorch build installed first; override it for a CUDA build, e.g. TORCH="torch==2.13.0".
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_OUT ?= demo-output

.PHONY: demo test mutate install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/canopy demo --out $(DEMO_OUT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# Mutation testing (hours on two cores; sessions resume): MUTATE="--target grid --target radiometry" picks targets.
# Survivors are listed in .mutation/report.md; docs/testing.md says which are harmless and why.
$(VENV)/.installed-mutate: pyproject.toml $(VENV)/.installed-dev
	$(BIN)/python -m pip install -e ".[dev,mutate]"
	touch $@

mutate: $(VENV)/.installed-mutate
	$(BIN)/python mutation/run.py $(MUTATE)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mutation
