# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

# torch==2.13.0 goes in first, in its own pip call: that is the CPU build on disk here.
# A plain `torch` requirement on a bare venv would pull gigabytes of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	# a real 4-channel cultured-neuron TIFF for the image tests (its imaging deps are not needed)
	$(PY) -m pip install -q --no-deps "ndev-sampledata"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sparsecell demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src

bench: $(STAMP)
	$(PY) benchmarks/sae_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
