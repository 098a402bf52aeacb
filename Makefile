# The README's two commands: `make demo` (the main job) and `make test` (the suite). Each installs what it needs.
PY ?= python3
PIP = $(PY) -m pip
TORCH ?= torch==2.13.0

.PHONY: install install-dev system-deps demo test lib clean-nbs check-sync bench docs lab

install:            ## PyTorch first (a CPU build where one is offered), then llmtrain
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e .

install-dev:        ## llmtrain with its dev extras (nbdev, papermill, pytest, ...)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev]"

system-deps:        ## the Debian packages the tests need (chromium, chromium-driver, dataset-fashion-mnist), via apt-get; sudo when not root
	bash tools/system_deps.sh

demo: install       ## train a character-level GPT on the built-in corpus and leave runs/<name>/
	llmtrain train

test: system-deps install-dev   ## unit tests and every notebook through papermill
	$(PY) -m pytest -n 2 --dist loadgroup tests

lib:                ## regenerate llmtrain/ and README.md from the notebooks, and clean the notebooks
	nbdev_export
	nbdev_clean
	$(PY) tools/readme.py

check-sync:         ## fail when the notebooks, the library or README.md are out of sync (also part of make test)
	$(PY) -m pytest -q -n 0 tests/test_sync.py

bench:              ## CPU benchmarks (results go to bench/out/)
	$(PY) bench/train_cpu.py

docs: system-deps install-dev   ## the docs site in _docs/, built offline from the notebooks (tools/build_docs.py; MathJax from npm)
	OMP_NUM_THREADS=1 $(PY) tools/build_docs.py

lab: install-dev    ## JupyterLab on the book (nbs/)
	$(PY) -m jupyter lab nbs
