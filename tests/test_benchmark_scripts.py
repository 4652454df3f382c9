"""The device check (benchmarks/gpu_check.sh, gpu_check.py) in its CPU mode.

So the one GPU run a session gets does not fail on a typo: every table is
built here with NumPy / PyTorch on the CPU, the wrapper's staging of the
package is exercised, and the CUDA-event timer runs on fake events.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
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


@pytest.fixture
def fake_zca_layer(monkeypatch):
    torch = pytest.importorskip("torch")
    import svdpi.torch

    class FakeZCA(torch.nn.Module):
        """The constructor of svdpi.torch.ZCAWhitening, BatchNorm's maths."""

        def __init__(self, num_features, num_groups=1):
            super().__init__()
            assert num_features % num_groups == 0
            self.norm = torch.nn.BatchNorm2d(num_features)

        def forward(self, x):
            return self.norm(x)

    if not hasattr(svdpi.torch, "ZCAWhitening"):
        monkeypatch.setattr(svdpi.torch, "ZCAWhitening", FakeZCA, raising=False)


def test_cpu_mode_writes_every_table(bench, tmp_path, capsys, fake_zca_layer, one_torch_thread):
    assert bench["gpu_check"].main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "gpu_check.md").read_text()
    assert text == capsys.readouterr().out.split("written:")[0]
    assert "CPU only" in text
    assert "not GPU numbers" in text
    for heading in (
        "### eig forward + VJP (and forward only)",
        "### eig_vjp alone (NumPy)",
        "### ZCA whitening layer vs BatchNorm2d, forward + backward",
    ):
        assert heading in text
    assert "| 8 × 4 |" in text
    assert "| 2 × 16 |" in text
    assert "svdpi NumPy fwd+VJP" in text
    assert "torch eigh fwd+bwd" in text
    assert "ZCA d=4" in text
    assert "ZCA d=16" in text
    assert "CuPy eigensolver table skipped: --device cpu" in text


def test_dry_run_lists_the_plan(bench, tmp_path, capsys):
    assert bench["gpu_check"].main(["--device", "cpu", "--dry-run", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "gpu_check_plan.md").read_text()
    assert "dry run: nothing timed" in text
    for shape in ("512 × 4", "512 × 32", "64 × 64", "1 × 512"):
        assert f"- {shape}: svdpi NumPy fwd+VJP" in text
    assert "ZCA input (128, 64, 32, 32)" in text


def test_cuda_mode_without_a_gpu_explains(bench, capsys):
    env = bench["gpu_check"].detect("cuda")
    if env.cupy is not None or env.torch is not None:
        pytest.skip("a CUDA device is present")
    assert bench["gpu_check"].main(["--device", "cuda", "--dry-run"]) == 2
    assert "use --device cpu" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_wrapper_stages_the_package_and_runs(tmp_path):
    script = BENCHMARKS / "gpu_check.sh"
    assert os.access(script, os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    result = subprocess.run(
        [str(script), "--skip-tests", str(tmp_path), "--device", "cpu", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # svdpi came from the staged copy, not from the checkout or an installation.
    location = next(line for line in result.stdout.splitlines() if line.startswith("svdpi from"))
    assert "/pkg/svdpi/__init__.py" in location
    assert (tmp_path / "gpu_check_plan.md").exists()


def test_cuda_tables_with_stand_ins(bench, tmp_path, monkeypatch, one_torch_thread):
    """The CUDA-only code paths (CuPy rows, solver table, VJP target) on CPU stand-ins.

    A NumPy-backed `cupy` and PyTorch on the CPU play the GPU libraries; the
    CUDA-event timer is replaced by the wall-clock one. Only the plumbing is
    checked: these are not GPU numbers.
    """
    import types

    import array_api_compat.numpy as xp_numpy
    import numpy as np

    torch = pytest.importorskip("torch")
    gpu_check, timing = bench["gpu_check"], bench["_timing"]
    fake = types.ModuleType("cupy")
    fake.__version__ = "stand-in"
    fake.asarray = np.asarray
    fake.ndarray = np.ndarray
    fake.ascontiguousarray, fake.empty = np.ascontiguousarray, np.empty
    fake.float32, fake.float64 = np.float32, np.float64
    fake.linalg = types.SimpleNamespace(eigh=np.linalg.eigh)
    fake.ElementwiseKernel = None  # not reached: NumPy arrays take the generic path
    before = {name for name in sys.modules if name.startswith("svdpi.cupy")}
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", xp_numpy)

    def detect(device):
        env = gpu_check.Environment(device="cuda", cupy=fake, torch=torch, torch_device="cpu")
        env.description = "stand-ins"
        return env

    monkeypatch.setattr(gpu_check, "detect", detect)
    monkeypatch.setattr(
        gpu_check,
        "time_side_by_side_cuda",
        lambda candidates, library, rounds, sync: timing.time_side_by_side(
            candidates, rounds=rounds
        ),
    )
    monkeypatch.setattr(gpu_check, "QUICK_SHAPES", [(1, 8), (3, 8), (4, 40)])
    monkeypatch.setattr(gpu_check, "zca_candidates", lambda env, shape, dtype: ({}, "not here"))
    monkeypatch.setattr(gpu_check, "VJP_TARGET_SHAPE", (3, 8))
    try:
        assert gpu_check.main(["--quick", "--out", str(tmp_path)]) == 0
    finally:
        for name in [name for name in sys.modules if name.startswith("svdpi.cupy")]:
            if name not in before:
                del sys.modules[name]
        import svdpi

        if "svdpi.cupy" not in before and hasattr(svdpi, "cupy"):
            delattr(svdpi, "cupy")
    text = (tmp_path / "gpu_check.md").read_text()
    for fragment in (
        "svdpi CuPy fwd+VJP",
        "svdpi CuPy generic fwd+VJP",
        "cupy.linalg.eigh fwd",
        "### eig_vjp alone (CuPy)",
        "eig_vjp fused",
        "target eig_vjp 3 × 8 < 0.5 ms:",
        "### CuPy eigensolvers (forward only)",
        "- 1 × 8: fastest ",  # which one is fastest is the measurement, not checked here
        ", policy picks syevd: ",
        "- 3 × 8: fastest ",
        "- 4 × 40: fastest ",
        ", policy picks syevd_loop: ",
        "SYEVJ_BATCHED_MAX_N = 32",
        "ZCA vs BatchNorm2d skipped: not here",
    ):
        assert fragment in text, fragment
    assert "| 4 × 40 |" in text


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
    assert [cells[1].strip() for cells in rows] == [
        "svdpi exact",
        "svdpi pi",
        "eigh autograd",
        "Newton–Schulz",
    ]
    errors = {cells[1].strip(): float(cells[5]) for cells in rows}
    assert errors["svdpi exact"] < 1e-4
    assert errors["eigh autograd"] < 1e-4
    assert errors["Newton–Schulz"] > 1e-3  # 5 steps do not converge on these spectra


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
