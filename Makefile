# bpbreid: the two commands are `make demo` and `make test`; both install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A PyTorch wheel with CUDA libraries takes about 6.5 GB in the venv; a full disk is the
# usual reason the first install fails, so say how much room there is when it does.
DISK_HINT := echo "Installing into $(VENV) failed (pip says why above); it needs about 7 GB of free disk, and here:" >&2; \
	df -h . >&2

.PHONY: help install demo test lint format unit notebooks-test notebooks lab bench clean

help:
	@echo "make demo       run the main job (synthetic occluded re-id, CPU-friendly)"
	@echo "make test       lint + unit tests + notebook tests (installs on first use)"
	@echo "make lab        open JupyterLab on the notebooks"
	@echo "make notebooks  re-execute every notebook in place (CPU mode) for committing"
	@echo "make bench      run the speed benchmarks"

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch>=2.1" "torchvision>=0.16" || { $(DISK_HINT); exit 1; }
	$(BIN)/python -m pip install --quiet -e ".[lab,dev,download]" || { $(DISK_HINT); exit 1; }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m bpbreid demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: $(STAMP)
	$(BIN)/python -m pytest tests/ -q

notebooks-test: $(STAMP)
	BPBREID_MODE=FAST $(BIN)/python -m pytest --nbval-lax --nbval-current-env -q notebooks/

test: lint unit notebooks-test

notebooks: $(STAMP)
	BPBREID_MODE=CPU $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=900 notebooks/*.ipynb

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python -m bpbreid bench all

clean:
	rm -rf outputs .pytest_cache
