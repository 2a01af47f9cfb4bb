# Two commands for a fresh machine with Python 3.11:  make demo  and  make test.
# TORCH picks the PyTorch build; the default is the CPU wheel. With a GPU: make demo TORCH="torch==2.13.0 --index-url ..."
PYTHON ?= python3.11
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test lint bench clean

$(BIN)/python:
	$(shell command -v $(PYTHON) || echo python3) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"

demo: install
	$(BIN)/toyllm demo

test: install-test
	$(BIN)/python -m pytest -q

lint: $(BIN)/python
	$(BIN)/pip install -q ruff
	$(BIN)/ruff check src recipes tests benchmarks
	$(BIN)/ruff format --check src recipes tests benchmarks

bench: install
	$(BIN)/python benchmarks/demo_time.py
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/ppo_throughput.py

clean:
	rm -rf outputs
