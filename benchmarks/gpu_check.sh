#!/usr/bin/env bash
# svdpi GPU check: one prepared run, with a hard time limit, for a machine
# with a CUDA GPU (`make gpu-check` calls it): the GPU tests and the timing
# tables of benchmarks/gpu_check.py, in one Markdown report,
#   OUT_DIR/gpu_check_report.md      (printed at the end too)
# with pytest's output and JUnit XML beside it (gpu_tests.log, gpu_tests.xml).
# The report is rewritten after every section: a run stopped by the limit
# keeps what it finished, and says where it stopped.
#
# Usage: benchmarks/gpu_check.sh [OUT_DIR] [gpu_check.py options...]
#   OUT_DIR defaults to $OUT (the device machine's output folder), else
#   runs/gpu_check. Options go to gpu_check.py, e.g.
#     benchmarks/gpu_check.sh /tmp/x --device cpu --quick   # the CPU smoke run, seconds
#     benchmarks/gpu_check.sh --skip tests                    # timings only
# GPU_CHECK_TIME_LIMIT (default 540 s) bounds the whole run.
# PYTHON (default python3) needs NumPy, pytest, and PyTorch (CUDA) and/or CuPy.
#
# Installs nothing from the network. svdpi is not pip-installed: src/svdpi and
# the adapters are copied into one temporary package put first on PYTHONPATH
# (the device machine has no build isolation to rely on). array-api-compat,
# which the device machine's python3 lacks, is installed from the wheels in
# .whl/ (git-ignored) when PYTHON cannot import it; fetch the wheel on a
# machine with network access, in the repository root:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl array-api-compat==1.16.0
# and carry .whl/ along to the GPU machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
LIMIT="${GPU_CHECK_TIME_LIMIT:-540}"

OUT_DIR="${OUT:-runs/gpu_check}"
if [[ $# -gt 0 && "${1}" != -* ]]; then
    OUT_DIR="$1"
    shift
fi
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
REPORT="$OUT_DIR/gpu_check_report.md"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
if ! "$PYTHON" -c "import array_api_compat" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$STAGE/site" .whl/*.whl
    fi
fi
# The installed layout: svdpi/ from src/, svdpi/torch, svdpi/cupy, svdpi/jax from backends/.
mkdir -p "$STAGE/pkg/svdpi"
cp -R src/svdpi/. "$STAGE/pkg/svdpi/"
for adapter in torch cupy jax; do
    cp -R "backends/$adapter" "$STAGE/pkg/svdpi/$adapter"
done
# And its metadata: the core finds an adapter's fast paths (svdpi.cupy's fused
# kernels) through the "svdpi.native" entry points; without them CuPy arrays
# would silently take the generic path.
"$PYTHON" - "$STAGE/pkg" <<'PYTHON_END'
import re
import sys
from pathlib import Path

version = re.search(r'__version__ = "([^"]+)"', Path("src/svdpi/__init__.py").read_text())[1]
pyproject = Path("pyproject.toml").read_text()
table = pyproject.split('[project.entry-points."svdpi.native"]', 1)[1].split("\n[", 1)[0]
entries = re.findall(r'^(\w+) = "([\w.]+)"', table, flags=re.MULTILINE)
info = Path(sys.argv[1]) / f"svdpi-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: svdpi\nVersion: {version}\n")
lines = ["[svdpi.native]", *(f"{name} = {module}" for name, module in entries)]
(info / "entry_points.txt").write_text("\n".join(lines) + "\n")
PYTHON_END
export PYTHONPATH="$STAGE/pkg:$STAGE/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export SVDPI_IN_DEVICE_CHECK=1  # tests of this script skip themselves inside it

if ! "$PYTHON" -c "import array_api_compat" 2>/dev/null; then
    echo "error: array-api-compat is not importable by $PYTHON; put its wheel in .whl/" \
        "(see the header of $0)" >&2
    exit 2
fi
"$PYTHON" -c "import svdpi; print('svdpi from', svdpi.__file__)"

# Hard limit: the Python side plans its sections to end 15 s before it.
STATUS=0
timeout --kill-after=10 "$LIMIT" "$PYTHON" benchmarks/gpu_check.py --out "$OUT_DIR" \
    --time-limit "$((LIMIT - 15))" "$@" || STATUS=$?
if [[ $STATUS == 124 || $STATUS == 137 ]]; then
    {
        echo
        echo "**Stopped by gpu_check.sh's hard limit of $LIMIT s**: a section marked" \
            "'running' above did not finish, and those marked 'not run' did not start."
    } >>"$REPORT"
    cat "$REPORT"
fi
echo "gpu_check.py exit status: $STATUS; report: $REPORT"
exit "$STATUS"
