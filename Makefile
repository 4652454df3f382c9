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
# pytest's exit status 5 ("no tests collected") is a pass: a module skipped as a
# whole because an optional peer is absent (spd_learn, scikit-learn, CuPy).
test-modules: venv
	ls tests/test_*.py | xargs -n 1 -P $(MODULE_JOBS) sh -c \
		'$(PY) -m pytest -q -p no:cacheprovider "$$0"; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc'

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

# One prepared run on a machine with a CUDA GPU, at most GPU_CHECK_TIME_LIMIT
# seconds (540): the GPU tests and the GPU timing tables, in one Markdown
# report, $(GPU_CHECK_OUT)/gpu_check_report.md (see benchmarks/gpu_check.sh and
# docs/benchmarks.rst). Through .venv, with CuPy added (CUPY_SPEC: the wheel for
# the CUDA of TORCH_SPEC's PyTorch, CUDA 13 for the pinned one). Where python3
# already has PyTorch, CuPy and pytest and there is no network (a lent GPU
# machine): `make gpu-check GPU_PYTHON=python3`, which builds and installs
# nothing (array-api-compat from .whl/ if missing, see gpu_check.sh).
# GPU_CHECK_ARGS go to benchmarks/gpu_check.py (e.g. "--skip tests").
GPU_PYTHON ?=
CUPY_SPEC ?= cupy-cuda13x
GPU_CHECK_OUT ?= runs/gpu_check
GPU_CHECK_ARGS ?=

.PHONY: gpu-check
gpu-check:
ifeq ($(strip $(GPU_PYTHON)),)
	$(MAKE) venv
	$(PY) -c "import cupy" 2>/dev/null || $(PY) -m pip install "$(CUPY_SPEC)"
	PYTHON=$(PY) bash benchmarks/gpu_check.sh $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)
else
	PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_check.sh $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)
endif

clean:
	rm -rf $(VENV) build dist docs/_build src/*.egg-info
