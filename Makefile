# sslandmarks: `make demo` (the main job) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test test-slow lint clean

setup: $(STAMP)

# torch==2.13.0 is installed first, from its pinned CPU wheel, so nothing can pull a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	-$(BIN)/pip install --quiet -c constraints.txt -e '.[onnx]'
	-$(BIN)/pip install --quiet -c constraints.txt -e '.[detect]'
	-$(BIN)/pip install --quiet -c constraints.txt -e '.[video]'
	touch $(STAMP)

demo: setup
	$(BIN)/sslandmarks demo --out runs/demo

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check src tests

clean:
	rm -rf runs .pytest_cache
