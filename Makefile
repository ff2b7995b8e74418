# Two entry points for a fresh machine with Python 3.11 and make:
#   make demo   set up .venv and run the main job on the bundled sample scans
#   make test   set up .venv and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench-preprocess clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf demo-out
	$(BIN)/neuralscan preprocess neuralscan_cli/samples demo-out/cache --val-fraction 0.3 --test-fraction 0

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench-preprocess: $(STAMP)
	$(BIN)/python benchmarks/preprocess_speed.py

clean:
	rm -rf $(VENV) demo-out
