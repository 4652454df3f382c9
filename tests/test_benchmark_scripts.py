"""The benchmark scripts in their quick modes, and the CUDA-event timer on fake events.

The device check itself (benchmarks/gpu_check.sh, gpu_check.py) is tested in
tests/test_gpu_check.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

pytestmark = pytest.mark.skipif(
    os.environ.get("SVDPI_IN_DEVICE_CHECK") == "1",
    reason="already inside benchmarks/gpu_check.sh",
)


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/gpu_check.py and _timing.py as modules (they import each other by name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    modules = {}
    for name in ("_timing", "gpu_check"):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


@pytest.fixture
def one_torch_thread():
    """Timing runs with one PyTorch thread: on a busy 2-core CI machine, two
    OpenMP threads make tiny batched matmuls a thousand times slower."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _HostEvent:
    """Stands in for a CUDA event: records the host clock."""

    def record(self):
        self.at = time.perf_counter()

    def synchronize(self):
        pass


def test_event_timer_measures_and_ranks(bench, monkeypatch):
    timing = bench["_timing"]
    monkeypatch.setattr(
        timing, "cuda_events", lambda library: (_HostEvent, lambda s, e: e.at - s.at)
    )
    synced = []
    times = timing.time_side_by_side_cuda(
        {"fast": lambda: None, "slow": lambda: time.sleep(0.002)},
        rounds=3,
        min_seconds=0.004,
        sync=lambda: synced.append(1),
    )
    assert set(times) == {"fast", "slow"}
    assert 0 <= times["fast"] < times["slow"]
    assert 0.0015 < times["slow"] < 0.05
    assert synced  # the device is waited for around every measurement


def test_cuda_events_rejects_an_unknown_library(bench):
    with pytest.raises(ValueError, match="library must be"):
        bench["_timing"].cuda_events("jax")


def _run_benchmark(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_zca_layer_benchmark_quick_mode(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    png = tmp_path / "zca.png"
    result = _run_benchmark(
        "bench_zca_layer.py", "--quick", "--no-loop", "--threads", "1", "--plot", str(png)
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    for row in ("BatchNorm2d", "ZCAWhitening(G=16)", "DBN(G=1)", "IterNorm(G=4)"):
        assert row in out, row
    assert "Whitening error against exact ZCA" in out
    errors = out.split("Whitening error against exact ZCA")[1].splitlines()
    rows = [line.split() for line in errors if line[:3].strip().isdigit()]
    assert len(rows) == 8  # four group sizes × two condition numbers
    for cells in rows:
        # ZCAWhitening and DBN are both exact ZCA, up to float32 round-off.
        assert float(cells[2]) < 1e-4
        assert float(cells[5]) < 1e-4
    assert png.stat().st_size > 10_000


def test_sqrtm_benchmark_quick_mode(tmp_path):
    pytest.importorskip("torch")
    table = tmp_path / "sqrtm.md"
    result = _run_benchmark("bench_sqrtm.py", "--quick", "--threads", "1", "--output", str(table))
    assert result.returncode == 0, result.stderr[-4000:]
    text = table.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 8 × 16")]
    peers = [
        name for name in ("spd_learn", "torchspd") if importlib.util.find_spec(name) is not None
    ]
    assert [cells[1].strip() for cells in rows] == [
        "svdpi exact",
        "svdpi pi",
        "eigh autograd",
        "Newton–Schulz",
        *peers,  # optional: skipped cleanly when not installed
    ]
    errors = {cells[1].strip(): float(cells[6]) for cells in rows}
    assert errors["svdpi exact"] < 1e-4
    assert errors["eigh autograd"] < 1e-4
    assert errors["Newton–Schulz"] > 1e-3  # 5 steps do not converge on these spectra
    for name in peers:
        assert errors[name] < 1e-4
    assert "- 8 × 16: svdpi exact / eigh autograd" in text


def test_jax_eig_benchmark_quick_mode(tmp_path):
    """benchmarks/bench_eig_jax.py --quick: a row per shape with two positive ratios.

    In a subprocess: the script sets XLA's thread flags before JAX starts.
    """
    pytest.importorskip("jax")
    output = tmp_path / "jax.md"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_eig_jax.py"), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "one XLA thread" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 16 × 4", "| 8 × 8"))]
    assert len(rows) == 2, text
    for row in rows:
        ratios = [float(cell) for cell in row.strip("|").split("|")[-2:]]
        assert all(ratio > 0 for ratio in ratios), row


def test_pi_vs_exact_quick_mode():
    """benchmarks/pi_vs_exact.py --quick: "pi" is "exact" to 1e-5 on the separated spectrum."""
    result = _run_benchmark("pi_vs_exact.py", "--quick")
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {line[:42].strip(): line[42:] for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {
        "separated: 4, 2, 1, 0.5",
        "ratios 0.9: 1, 0.9, 0.81, 0.729",
        "relative gap 1e-4: 2, 1 + 1e-4, 1, 0.5",
        "real-image covariance, d = 16",
    }
    # Each row: median, max for inv_sqrtm, logm, sqrtm.
    numbers = {k: [float(x) for x in re.findall(r"[0-9.e+-]+", row)] for k, row in rows.items()}
    medians = {key: values[0::2] for key, values in numbers.items()}
    assert all(len(values) == 6 for values in numbers.values())
    assert max(medians["separated: 4, 2, 1, 0.5"]) < 1e-5
    assert min(medians["ratios 0.9: 1, 0.9, 0.81, 0.729"]) > 1e-2
