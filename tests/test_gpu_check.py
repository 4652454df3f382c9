"""The device check (benchmarks/gpu_check.py, gpu_check.sh, `make gpu-check`) on the CPU.

So the one GPU run a session may get does not fail on a typo: every section
runs here in ``--device cpu --quick`` mode, the test selection and its
report are checked on a small suite with a failing GPU test, a section that
raises or overruns is reported while the rest still run, the wrapper's hard
time limit leaves a partial report, and the CUDA-only code paths run on
CPU stand-ins. None of these numbers are GPU numbers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

pytestmark = pytest.mark.skipif(
    os.environ.get("SVDPI_IN_DEVICE_CHECK") == "1",
    reason="already inside benchmarks/gpu_check.sh",
)


@pytest.fixture
def gpu_check(monkeypatch):
    """benchmarks/gpu_check.py and its helpers, fresh (they import each other by name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    modules = {}
    for name in ("_timing", "_sections", "_gpu_tests", "gpu_check"):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        modules[name] = module
    return types.SimpleNamespace(**modules)


@pytest.fixture
def one_torch_thread():
    """Timing runs with one PyTorch thread: on a busy 2-core CI machine, two
    OpenMP threads make tiny batched matmuls a thousand times slower."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A suite standing in for the repository's: what needs a GPU (a `gpu` mark, or
# the `cupy` backend of a parametrised fixture) and what does not.
SMALL_SUITE = {
    "pytest.ini": """
        [pytest]
        markers =
            gpu: needs a CUDA device
    """,
    "test_small.py": """
        import pytest

        @pytest.mark.gpu
        def test_gpu_passes():
            pass

        @pytest.mark.gpu
        def test_gpu_skips():
            pytest.skip("no CUDA device available")

        @pytest.mark.parametrize("backend", ["numpy", "cupy"])
        def test_on_backend(backend):
            pass

        @pytest.mark.parametrize("example", ["svdpi.cupy.solve_eigh", "svdpi.eig"])
        def test_docstring_example(example):
            pass

        def test_cpu_only():
            pass
    """,
}
FAILING_TEST = """

        @pytest.mark.gpu
        def test_gpu_fails():
            assert 1 == 2, "the GPU gave another answer"
"""


def _write_suite(directory: Path, *, failing: bool) -> Path:
    directory.mkdir()
    for name, text in SMALL_SUITE.items():
        if name.endswith(".py") and failing:
            text += FAILING_TEST
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def _report(out: Path) -> str:
    return (out / "gpu_check_report.md").read_text()


def _status(text: str) -> dict[str, str]:
    """The status table of a report: section -> status."""
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \| [\d.]* \|$", text, flags=re.MULTILINE)
    return {name: status.strip() for name, status in rows if name != "section"}


def test_cpu_quick_mode_runs_every_section(gpu_check, tmp_path, capsys, one_torch_thread):
    suite = _write_suite(tmp_path / "suite", failing=False)
    out = tmp_path / "out"
    start = time.monotonic()
    argv = ["--device", "cpu", "--quick", "--out", str(out), "--test-paths", str(suite)]
    assert gpu_check.gpu_check.main(argv) == 0
    assert time.monotonic() - start < 60  # seconds on an idle machine; CI may be loaded
    text = _report(out)
    assert text in capsys.readouterr().out
    assert _status(text) == dict.fromkeys(gpu_check.gpu_check.SECTIONS, "ok")
    assert "CPU only" in text
    assert "not GPU numbers" in text
    for section in gpu_check.gpu_check.SECTIONS.values():
        assert f"## {section.title}\n" in text
    for fragment in (
        "| array-api-compat |",
        "| 8 × 4 |",
        "| 2 × 16 |",
        "svdpi NumPy fwd+VJP",
        "torch eigh fwd+bwd",
        "The explicit VJP on NumPy arrays.",
        "Skipped: --device cpu",  # the CuPy solvers
        "svdpi exact / eigh autograd:",
        "| 4 × 8 custom tanh |",  # the spectral maps
        "4 × 8 exp: svdpi / eigh, double backward:",
        "| log | 0.0e+00 | 0.0e+00 | 0.0e+00 | 0.0e+00 | 0.0e+00 | 0.0e+00 |",
        "ZCA d=4 / BatchNorm2d:",
        "ZCA d=16 / BatchNorm2d:",
        "svdpi.torch.spd unchecked / eigh autograd:",
        # The GPU tests of the small suite: two gpu-marked, one on cupy, one example of
        # svdpi.cupy; not the CPU ones.
        "**3 passed, 0 failed, 0 errors, 1 skipped** (4 tests)",
        "- 1 × no CUDA device available",
        "3 deselected",
    ):
        assert fragment in text, fragment
    # Sections announced but not written are listed (none since 0.3's were written).
    for name in gpu_check.gpu_check.PENDING_SECTIONS:
        assert f"\n- {name}: " in text
    if not gpu_check.gpu_check.PENDING_SECTIONS:
        assert "Not covered yet" not in text
    assert (out / "gpu_tests.xml").exists()
    assert "3 passed, 1 skipped, 3 deselected" in (out / "gpu_tests.log").read_text()


def test_without_pytorch_the_timing_sections_say_so(gpu_check, tmp_path, monkeypatch):
    # As where only CuPy (or, on the CPU, only NumPy) is installed: every section
    # runs, PyTorch's candidates are left out and the sections that need it skip.
    module = gpu_check.gpu_check
    real_detect = module.detect

    def detect(device):
        env = real_detect(device)
        env.torch = None
        env.skipped["torch"] = "PyTorch is not installed (stand-in)"
        return env

    monkeypatch.setattr(module, "detect", detect)
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--quick", "--out", str(out), "--skip", "tests"]
    assert module.main(argv) == 0
    text = _report(out)
    assert set(_status(text).values()) == {"ok"}
    assert "svdpi NumPy fwd+VJP" in text
    assert "torch eigh" not in text
    assert "svdpi NumPy hvp" in text  # the spectral section, without its torch columns
    assert "svdpi double bwd" not in text
    assert text.count("Skipped: PyTorch is not installed (stand-in)") == 3  # sqrtm, zca, spd


def test_a_failing_gpu_test_fails_the_check(gpu_check, tmp_path):
    suite = _write_suite(tmp_path / "suite", failing=True)
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--quick", "--out", str(out), "--sections", "tests"]
    assert gpu_check.gpu_check.main([*argv, "--test-paths", str(suite)]) == 1
    text = _report(out)
    assert _status(text) == {"tests": "FAILED"}
    assert "**3 passed, 1 failed, 0 errors, 1 skipped** (5 tests)" in text
    assert "| failure | `test_small::test_gpu_fails` | AssertionError: the GPU gave" in text


def test_the_repository_gpu_tests_are_selected(gpu_check, tmp_path):
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--out", str(out), "--sections", "tests"]
    assert gpu_check.gpu_check.main([*argv, "--test-paths", "tests/test_cupy_gpu.py"]) == 0
    text = _report(out)
    counts = re.search(
        r"\*\*(\d+) passed, 0 failed, 0 errors, (\d+) skipped\*\* \((\d+) tests", text
    )
    assert counts, text
    gpu_marked = (ROOT / "tests" / "test_cupy_gpu.py").read_text().count("@pytest.mark.gpu\n")
    assert int(counts[3]) >= gpu_marked > 5  # every gpu-marked test, parametrised


def test_a_section_that_fails_or_overruns_is_reported_and_the_rest_run(
    gpu_check, tmp_path, monkeypatch
):
    module = gpu_check.gpu_check
    Section = gpu_check._sections.Section
    report_path = tmp_path / "out" / "gpu_check_report.md"
    seen_while_running = []

    def raises(ctx):
        raise RuntimeError("a bug in a section")

    def overruns(ctx):
        time.sleep(30)  # interrupted by the section's alarm
        return ["never"]

    def looks_at_the_report(ctx):
        seen_while_running.append(report_path.read_text())
        return ["all good"]

    sections = {
        "raises": Section("raises", "Raises", raises, budget=10),
        "overruns": Section("overruns", "Overruns", overruns, budget=0.5),
        "fine": Section("fine", "Fine", looks_at_the_report, budget=10),
    }
    monkeypatch.setattr(module, "SECTIONS", sections)
    start = time.monotonic()
    argv = [
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "out"),
        "--sections",
        "raises,overruns,fine",
    ]
    assert module.main(argv) == 1
    assert time.monotonic() - start < 20
    text = report_path.read_text()
    assert _status(text) == {"raises": "ERROR", "overruns": "TIMED OUT", "fine": "ok"}
    assert "RuntimeError: a bug in a section" in text
    assert "Stopped: over its budget of 0 s." in text or "Stopped: over its budget of 1 s." in text
    assert "all good" in text
    # The report was on disk, with the sections before, while the last one ran.
    (during,) = seen_while_running
    assert _status(during)["fine"].startswith("running")
    assert "a bug in a section" in during


def test_sections_past_the_time_limit_are_listed_as_not_run(gpu_check, tmp_path):
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--out", str(out), "--time-limit", "1", "--sections", "eig,zca"]
    assert gpu_check.gpu_check.main(argv) == 1
    status = _status(_report(out))
    assert set(status) == {"eig", "zca"}
    for value in status.values():
        assert re.fullmatch(r"not run: [01] s left of the limit", value), value


def test_dry_run_lists_the_plan(gpu_check, tmp_path):
    argv = ["--device", "cpu", "--dry-run", "--out", str(tmp_path)]
    assert gpu_check.gpu_check.main(argv) == 0
    text = (tmp_path / "gpu_check_plan.md").read_text()
    assert "plan (dry run, nothing timed)" in text
    for shape in ("512 × 4", "512 × 32", "64 × 64", "1 × 512"):
        assert f"- {shape}: svdpi NumPy fwd+VJP" in text
    assert "- 32 × 64: svdpi exact, svdpi pi, eigh autograd" in text
    assert "ZCA input (128, 64, 32, 32)" in text
    assert "-p _gpu_tests" in text
    assert not (tmp_path / "gpu_check_report.md").exists()


def test_list_names_every_section_and_the_pending_ones(gpu_check, capsys):
    assert gpu_check.gpu_check.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in [*gpu_check.gpu_check.SECTIONS, *gpu_check.gpu_check.PENDING_SECTIONS]:
        assert re.search(rf"^{name} ", out, flags=re.MULTILINE), name


def test_unknown_sections_are_refused(gpu_check, capsys):
    with pytest.raises(SystemExit):
        gpu_check.gpu_check.main(["--sections", "eig,nonexistent"])
    assert "unknown sections ['nonexistent']" in capsys.readouterr().err


def test_cuda_mode_without_a_gpu_explains(gpu_check, capsys):
    env = gpu_check.gpu_check.detect("cuda")
    if env.cupy is not None or env.torch is not None:
        pytest.skip("a CUDA device is present")
    assert gpu_check.gpu_check.main(["--device", "cuda", "--dry-run"]) == 2
    assert "use --device cpu" in capsys.readouterr().err


def test_cuda_sections_with_stand_ins(gpu_check, tmp_path, monkeypatch, one_torch_thread):
    """The CUDA-only code paths (CuPy rows, solver table, VJP target) on CPU stand-ins.

    A NumPy-backed `cupy` and PyTorch on the CPU play the GPU libraries; the
    CUDA-event timer is replaced by the wall-clock one. Only the plumbing is
    checked: these are not GPU numbers.
    """
    import array_api_compat.numpy as xp_numpy
    import numpy as np

    torch = pytest.importorskip("torch")
    module, timing = gpu_check.gpu_check, gpu_check._timing
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
        env = module.Environment(device="cuda", cupy=fake, torch=torch, torch_device="cpu")
        env.description = "stand-ins"
        return env

    monkeypatch.setattr(module, "detect", detect)
    monkeypatch.setattr(
        module,
        "time_side_by_side_cuda",
        lambda candidates, library, rounds, min_seconds, sync: timing.time_side_by_side(
            candidates, rounds=rounds, min_seconds=min_seconds
        ),
    )
    monkeypatch.setattr(module, "QUICK_SHAPES", [(1, 8), (3, 8), (4, 40)])
    monkeypatch.setattr(module, "VJP_TARGET_SHAPE", (3, 8))
    argv = ["--quick", "--out", str(tmp_path), "--sections", "eig,vjp,solvers"]
    try:
        assert module.main(argv) == 0
    finally:
        for name in [name for name in sys.modules if name.startswith("svdpi.cupy")]:
            if name not in before:
                del sys.modules[name]
        import svdpi

        if "svdpi.cupy" not in before and hasattr(svdpi, "cupy"):
            delattr(svdpi, "cupy")
    text = _report(tmp_path)
    for fragment in (
        "svdpi CuPy fwd+VJP",
        "svdpi CuPy generic fwd+VJP",
        "cupy.linalg.eigh fwd",
        "svdpi.torch generic fwd+bwd",
        "The explicit VJP on CuPy arrays.",
        "eig_vjp fused",
        "target eig_vjp 3 × 8 < 0.5 ms:",
        "- 1 × 8: fastest ",  # which one is fastest is the measurement, not checked here
        ", policy picks syevd: ",
        "- 3 × 8: fastest ",
        "- 4 × 40: fastest ",
        ", policy picks syevd_loop: ",
        "SYEVJ_BATCHED_MAX_N = 32",
    ):
        assert fragment in text, fragment
    assert "| 4 × 40 |" in text


# --- the wrapper and the make target ---------------------------------------------------------


def _run(command, *, env=None, timeout=300):
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(env or {})}
    environment.pop("OUT", None)
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env=environment, timeout=timeout
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_wrapper_stages_the_package_and_writes_the_report(tmp_path):
    script = BENCHMARKS / "gpu_check.sh"
    assert os.access(script, os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    args = ["--device", "cpu", "--quick", "--sections", "environment,eig"]
    result = _run([str(script), str(tmp_path), *args])
    assert result.returncode == 0, result.stdout + result.stderr
    # svdpi came from the staged copy, not from the checkout or an installation.
    location = next(line for line in result.stdout.splitlines() if line.startswith("svdpi from"))
    assert "/pkg/svdpi/__init__.py" in location
    text = _report(tmp_path)
    assert _status(text) == {"environment": "ok", "eig": "ok"}
    assert "/pkg/svdpi)" in text  # the environment table names the staged package
    # with its entry points: CuPy arrays reach svdpi.cupy's fused kernels.
    assert "| svdpi.native entry points | cupy = svdpi.cupy, torch = svdpi.torch |" in text
    assert text in result.stdout  # printed at the end
    assert f"gpu_check.py exit status: 0; report: {tmp_path / 'gpu_check_report.md'}" in (
        result.stdout
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_wrapper_hard_limit_leaves_a_partial_report(tmp_path):
    # A test suite that hangs, a hard limit of 25 s that the Python side is told
    # to ignore (--time-limit 600): the wrapper stops the run, the report keeps
    # the finished section and says which one was running.
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_hangs.py").write_text(
        "import time, pytest\n\n@pytest.mark.gpu\ndef test_hangs():\n    time.sleep(600)\n"
    )
    (suite / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    out = tmp_path / "out"
    args = ["--device", "cpu", "--quick", "--sections", "environment,tests,eig"]
    args += ["--time-limit", "600", "--test-paths", str(suite)]
    start = time.monotonic()
    result = _run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out), *args],
        env={"GPU_CHECK_TIME_LIMIT": "25"},
    )
    assert time.monotonic() - start < 120
    assert result.returncode == 124, result.stdout + result.stderr
    text = _report(out)
    status = _status(text)
    assert status["environment"] == "ok"
    assert status["tests"].startswith("running")
    assert status["eig"] == "not run"
    assert "**Stopped by gpu_check.sh's hard limit of 25 s**" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_runs_the_wrapper(tmp_path):
    out = tmp_path / "out"
    variables = [
        f"GPU_PYTHON={sys.executable}",
        f"GPU_CHECK_OUT={out}",
        "GPU_CHECK_ARGS=--device cpu --quick --sections environment",
    ]
    result = _run(["make", "--no-print-directory", "gpu-check", *variables])
    assert result.returncode == 0, result.stdout + result.stderr
    assert _status(_report(out)) == {"environment": "ok"}
    # Without GPU_PYTHON the target goes through .venv, with CuPy added.
    plan = _run(["make", "-n", "--no-print-directory", "gpu-check", "CUPY_SPEC=cupy-cudaXX"])
    assert 'pip install "cupy-cudaXX"' in plan.stdout
    assert "PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh runs/gpu_check" in plan.stdout
