# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip

.PHONY: venv install install-demo install-test demo demo-qat demo-dygraph-qat demo-embedding demo-cli test bench bench-embedding

# Create .venv only if it is missing; pip is upgraded when it is created.
venv: $(PYTHON)

$(PYTHON):
	$(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Editable install with runtime dependencies only.
install: venv
	$(PIP) install -e .

# Editable install plus an extra from setup.py (demo: scikit-learn; test: pytest, paddleslim, ...).
install-demo install-test: install-%: venv
	$(PIP) install -e ".[$*]"

demo: install-demo
	$(PYTHON) demos/ptq_ppocr.py

demo-qat: install-demo
	$(PYTHON) demos/qat_digits.py

# Dygraph QAT on one process, then data-parallel on two (gloo), compared with the first run.
demo-dygraph-qat: install-demo
	$(PYTHON) demos/dygraph_qat_digits.py
	$(PYTHON) demos/dygraph_qat_digits.py --nproc 2 --out out/dygraph_qat_digits_dp \
		--reference out/dygraph_qat_digits/results.json

demo-embedding: install-demo
	$(PYTHON) demos/quant_embedding_demo.py

demo-cli: install-demo
	$(PYTHON) demos/cli_ppocr.py

test: install-test
	$(PYTHON) -m pytest -q

bench: install-test
	$(PYTHON) bench/qat_overhead.py

bench-embedding: install-test
	$(PYTHON) bench/embedding.py
