# bpbreid: the two commands are `make demo` and `make test`; both install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A PyTorch wheel with CUDA libraries takes about 6.5 GB in the venv; a full disk is the
# usual reason the first install fails, so say how much room there is when it does.
DISK_HINT := echo "Installing into $(VENV) failed (pip says why above); it needs about 7 GB of free disk, and here:" >&2; \
	df -h . >&2

.PHONY: help install demo test lint format unit notebooks-test notebooks clean-notebooks lab book bench clean

help:
	@echo "make demo       run the main job (synthetic occluded re-id, CPU-friendly)"
	@echo "make test       lint + unit tests + notebook tests (installs on first use)"
	@echo "make lab        open JupyterLab on the notebooks"
	@echo "make notebooks  re-execute every notebook in place (CPU mode) for committing"
	@echo "make clean-notebooks  strip volatile metadata (timestamps, widget state) from notebooks"
	@echo "make bench      run the speed benchmarks"
	@echo "make book       build the course as a static site (book/_build/html) and check it"

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
	$(BIN)/python -m bpbreid.notebook clean

clean-notebooks: $(STAMP)
	$(BIN)/python -m bpbreid.notebook clean

# As root (Docker, many cloud machines) Jupyter refuses to start without --allow-root.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $$(test "$$(id -u)" = 0 && echo --allow-root)

# The course book: Jupyter Book 1 (Sphinx) in its own venv, from the committed executed notebooks
# (nothing is executed; no network needed once installed). Open book/_build/html/index.html.
BOOK_VENV := .venv-book
$(BOOK_VENV)/.installed:
	test -d $(BOOK_VENV) || $(PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_VENV)/bin/python -m pip install --quiet "jupyter-book>=1.0.4,<2" "jupyter-server-mathjax>=0.2.6"
	touch $@

book: $(BOOK_VENV)/.installed
	rm -rf book/notebooks && mkdir -p book/notebooks
	cp notebooks/*.ipynb book/notebooks/
	$(BOOK_VENV)/bin/jupyter-book build book
	mkdir -p book/_build/html/notebooks/solutions && cp notebooks/solutions/*.py book/_build/html/notebooks/solutions/
	rm -rf book/_build/html/_static/mathjax && cp -r "$$($(BOOK_VENV)/bin/python -c 'import jupyter_server_mathjax, os; print(os.path.dirname(jupyter_server_mathjax.__file__))')/static" book/_build/html/_static/mathjax
	$(BOOK_VENV)/bin/python book/check_book.py book/_build/html

bench: $(STAMP)
	$(BIN)/python -m bpbreid bench all

clean:
	rm -rf outputs .pytest_cache
