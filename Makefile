PYTHON ?= python
# The CPU build of torch is installed first and pinned, so that no CUDA wheels are pulled in.
TORCH ?= torch==2.13.0

.PHONY: install test test-slow notebook style quality bench bench-full

install:
	$(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -e ".[dev,demo,onnx]" "$(TORCH)"

test:
	$(PYTHON) -m pytest -q

test-slow:
	$(PYTHON) -m pytest -q -m slow

# Execute the walkthrough notebook (nbclient); any failing cell fails the target. Outputs are not written back.
notebook:
	$(PYTHON) -c "import nbclient, nbformat; nb = nbformat.read('notebooks/walkthrough.ipynb', as_version=4); nbclient.NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': 'notebooks'}}).execute(); print('notebooks/walkthrough.ipynb: every cell ran')"

style:
	ruff format .
	ruff check --fix .

quality:
	ruff check .
	ruff format --check .

# Benchmarks (need ../shared/data): speed and quality ratios against baselines run in the same process.
bench:
	$(PYTHON) benchmarks/run_all.py

bench-full:
	$(PYTHON) benchmarks/run_all.py --full-quality
