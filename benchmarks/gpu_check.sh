#!/usr/bin/env bash
# svdpi GPU check, one command (about 2-4 minutes on one GPU):
#   1. the GPU tests (CuPy and PyTorch CUDA, the DLPack parity test, the
#      CuPy example) with pytest;
#   2. benchmarks/gpu_check.py: timings side by side, as Markdown.
#
# Usage: benchmarks/gpu_check.sh [--skip-tests] [OUT_DIR] [gpu_check.py options...]
#   OUT_DIR defaults to $OUT (the device machine's output folder) or runs/gpu_check.
#   Writes OUT_DIR/tests.log and OUT_DIR/gpu_check.md.
#   e.g. benchmarks/gpu_check.sh --skip-tests /tmp/x --device cpu --quick  (CPU smoke run)
#
# Installs nothing from the network. svdpi is not pip-installed: src/svdpi and
# the adapters are copied into one temporary package and put on PYTHONPATH
# (the device image has no build isolation to rely on). array-api-compat, which
# the device image lacks, is installed from wheels carried in .whl/, if present:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl array-api-compat
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

RUN_TESTS=1
if [[ "${1:-}" == "--skip-tests" ]]; then
    RUN_TESTS=0
    shift
fi
OUT_DIR="${OUT:-runs/gpu_check}"
if [[ $# -gt 0 && "${1}" != --* ]]; then
    OUT_DIR="$1"
    shift
fi
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$STAGE/site" .whl/*.whl
fi
# The installed layout: svdpi/ from src/, svdpi/torch and svdpi/cupy from backends/.
mkdir -p "$STAGE/pkg/svdpi"
cp -R src/svdpi/. "$STAGE/pkg/svdpi/"
cp -R backends/torch "$STAGE/pkg/svdpi/torch"
cp -R backends/cupy "$STAGE/pkg/svdpi/cupy"
export PYTHONPATH="$STAGE/pkg:$STAGE/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export SVDPI_IN_DEVICE_CHECK=1  # tests of this script skip themselves inside it

if ! "$PYTHON" -c "import array_api_compat" 2>/dev/null; then
    echo "error: array-api-compat is not importable; put its wheel in .whl/ (see the header)" >&2
    exit 2
fi
"$PYTHON" -c "import svdpi, sys; print('svdpi from', svdpi.__file__); sys.exit(0)"

STATUS=0
if [[ $RUN_TESTS == 1 ]]; then
    echo "== GPU tests (pytest -m gpu, and the CuPy backend of the shared tests) =="
    # -k selects the gpu-marked tests and every test parametrised with the cupy
    # backend; the parity test is test_gpu_dlpack_parity_with_torch.
    set +e
    timeout 240 "$PYTHON" -m pytest tests -q -p no:cacheprovider -rs \
        -k "gpu or cupy or cuda" 2>&1 | tee "$OUT_DIR/tests.log"
    STATUS=${PIPESTATUS[0]}
    set -e
    echo "pytest exit status: $STATUS" | tee -a "$OUT_DIR/tests.log"
fi

echo "== timings =="
timeout 300 "$PYTHON" benchmarks/gpu_check.py --out "$OUT_DIR" "$@"
exit "$STATUS"
