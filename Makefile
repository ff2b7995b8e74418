# Two entry points for a fresh machine with Python 3.11 and make:
#   make demo   set up .venv, classify and segment the bundled sample scans with the bundled models
#   make test   set up .venv and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Keras 3 (TensorFlow >= 2.16, no ITEX) runs the model and training tests too: the code must work on both
PYTHON_KERAS3 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
VENV_KERAS3   ?= .venv-keras3
STAMP_KERAS3  := $(VENV_KERAS3)/.installed

.PHONY: demo test test-keras3 install bench-preprocess clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf demo-out
	$(BIN)/neuralscan classify neuralscan_cli/samples/images --out demo-out/results.csv \
		--with-segmentation --seg-out demo-out/segmentation

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-keras3

$(STAMP_KERAS3): pyproject.toml constraints.txt
	$(PYTHON_KERAS3) -m venv $(VENV_KERAS3)
	$(VENV_KERAS3)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_KERAS3)/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP_KERAS3)

test-keras3:
ifeq ($(PYTHON_KERAS3),)
	@echo "Keras 3 tests skipped: no Python 3.12 found (set PYTHON_KERAS3=/path/to/python3.12)"
else
	$(MAKE) --no-print-directory $(STAMP_KERAS3)
	$(VENV_KERAS3)/bin/python -m pytest -q tests/models tests/training
endif

bench-preprocess: $(STAMP)
	$(BIN)/python benchmarks/preprocess_speed.py

clean:
	rm -rf $(VENV) $(VENV_KERAS3) demo-out
