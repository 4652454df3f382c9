# Every target sets up what it needs in a local virtual environment, so each
# works on a fresh clone: `make demo` (the main example) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PyTorch is pinned here, not in the package metadata (which asks only for a
# minimum), so that CI and the demo are reproducible. Override for your CUDA,
# e.g. `make test TORCH_SPEC="torch torchvision --index-url ..."`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.svdpi-installed
PYTEST_ARGS ?= -n auto
MODULE_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: venv test test-modules demo docs lint format bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[numpy,jax,test,docs,examples]"
	touch $(STAMP)

venv: $(STAMP)

# The suite runs in random order (pytest-randomly; the seed is printed, rerun
# an order with PYTEST_ARGS="-n auto --randomly-seed=N").
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Each test module alone in a fresh process, MODULE_JOBS at a time: a test
# that passes only after another module has imported or warmed something up
# fails here (as svdpi 0.1's torch.compile tests did). CI runs it after `test`.
test-modules: venv
	ls tests/test_*.py | xargs -n 1 -P $(MODULE_JOBS) $(PY) -m pytest -q -p no:cacheprovider

# A short, real run of the CIFAR example: ZCA ResNet (d = 4, narrow) for 3 short
# epochs. CIFAR-10 is used when it is on disk or can be downloaded; otherwise
# the run says so and trains on the built-in synthetic CIFAR-shaped data set.
# --overwrite: a second `make demo` replaces the first demo's run (train.py
# refuses to write into a folder holding a run without it).
demo: venv
	$(PY) examples/zca_resnet_cifar/train.py --dataset cifar10 --fallback-synthetic \
		--synthetic-size 4000 --norm zca --group-size 4 --width 16 --batch-size 64 \
		--lr 0.05 --milestones "" --epochs 3 --max-steps 30 --threads 1 --out-dir runs/demo \
		--overwrite
	$(PY) examples/degenerate_gradient.py

docs: venv
	$(PY) -m sphinx -W --keep-going -n -b html docs docs/_build/html

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: venv
	$(PY) benchmarks/bench_eig.py
	$(PY) benchmarks/bench_eig_jax.py

clean:
	rm -rf $(VENV) build dist docs/_build src/*.egg-info
