"""The stability study (examples/stability_study.py): its parts, and a tiny run end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def _load_study():
    # Loaded from its path: examples/ never goes on sys.path.
    spec = importlib.util.spec_from_file_location(
        "stability_study", ROOT / "examples" / "stability_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


study = _load_study()


def _covariances(groups, d, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(groups, d, d, generator=generator, dtype=torch.float64))
    spectrum = 4.0 ** -torch.arange(d, dtype=torch.float64)  # ratios 1/4: PI converges fast
    return (q * spectrum) @ q.mT


@pytest.mark.parametrize("method", study.METHODS)
def test_the_three_eigs_agree_on_a_separated_spectrum(method):
    cov = _covariances(3, 4)
    eig = study.eig_function(method, pi_iters=80)
    values, vectors = eig(cov)
    expected_values = torch.linalg.eigvalsh(cov).flip(-1)
    torch.testing.assert_close(values, expected_values, rtol=1e-9, atol=1e-12)
    # Eigenvectors up to sign: compare the projectors v vᵀ.
    expected = torch.linalg.eigh(cov).eigenvectors.flip(-1)

    def projectors(v):  # one v_j v_jᵀ per column j
        return torch.einsum("gij,gkj->gjik", v, v)

    torch.testing.assert_close(projectors(vectors), projectors(expected), rtol=0, atol=1e-9)


def test_svdpi_and_classical_gradients_agree_on_a_separated_spectrum():
    """Through the study's whitening, on a separated spectrum: the gradients coincide."""
    grads = {}
    for method in ("eigh", "svd-pi"):
        cov = _covariances(2, 4).requires_grad_(True)
        values, vectors = study.eig_function(method, pi_iters=19)(cov)
        whitening = (vectors * values.rsqrt().unsqueeze(-2)) @ vectors.mT
        whitening[:, 0].sum().backward()
        grads[method] = cov.grad
    torch.testing.assert_close(grads["svd-pi"], grads["eigh"], rtol=1e-4, atol=1e-6)


def test_exact_whitening_is_the_classical_gradient_on_a_separated_spectrum():
    """The study's ``exact`` layer: same W as the eig route, Daleckii–Krein backward."""
    cov = _covariances(2, 4).requires_grad_(True)
    values, vectors = study.eig_classical(cov)
    reference = (vectors * values.rsqrt().unsqueeze(-2)) @ vectors.mT
    (expected,) = torch.autograd.grad(reference[:, 0].sum(), cov)
    whitening = study.ExactWhitening.apply(cov, 1e-12, False)
    torch.testing.assert_close(whitening, reference.detach(), rtol=1e-10, atol=0)
    (grad,) = torch.autograd.grad(whitening[:, 0].sum(), cov)
    torch.testing.assert_close(grad, (expected + expected.mT) / 2, rtol=1e-8, atol=1e-10)


def test_exact_whitening_is_finite_at_a_repeated_eigenvalue():
    spectrum = torch.tensor([2.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    cov = torch.diag(spectrum).requires_grad_(True)
    whitening = study.ExactWhitening.apply(cov, 1e-12, False)
    (grad,) = torch.autograd.grad(whitening.sum(), cov)
    # d sum(W) / dA in the eigenbasis (the identity here): G_ij = divided differences of λ^-1/2.
    w = spectrum[:, None]
    divided = (w**-0.5 - w.mT**-0.5) / (w - w.mT)
    kernel = torch.where(w == w.mT, -0.5 * w**-1.5, divided)
    torch.testing.assert_close(grad, kernel, rtol=1e-12, atol=0)


@pytest.mark.parametrize("truncate", [False, True])
def test_group_zca_whitens_each_group(truncate):
    torch.manual_seed(0)
    layer = study.GroupZCA(8, 4, study.eig_svdpi, eps=1e-6, truncate=truncate).double()
    mixing = torch.randn(8, 8, dtype=torch.float64)
    x = torch.einsum("ij,njhw->nihw", mixing, torch.randn(64, 8, 4, 4, dtype=torch.float64))
    y = layer(x)
    for group in range(2):
        features = y[:, 4 * group : 4 * group + 4].transpose(0, 1).reshape(4, -1)
        cov = features @ features.T / features.shape[1]
        eigenvalues = torch.linalg.eigvalsh(cov)
        # Whitened: every kept direction has unit variance; the paper's
        # inclusive energy rule drops the smallest one (variance 0).
        expected = torch.tensor([0.0, 1, 1, 1] if truncate else [1.0, 1, 1, 1])
        torch.testing.assert_close(eigenvalues, expected.double(), rtol=0, atol=1e-4)


def test_quick_run_end_to_end(tmp_path):
    rows = study.main(["--quick", "--output", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} >= {
        "stability.md",
        "stability.csv",
        "stability.json",
        "stability.png",
        "machine.txt",
    }
    # One row per (d, method), in the order of the table.
    assert [(r["d"], r["method"]) for r in rows] == [
        (d, m) for d in (4, 16) for m in study.METHODS
    ]
    table = (tmp_path / "stability.md").read_text().splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("| d |"))
    body = table[header + 2 :]
    assert len(body) == len(rows)
    assert all(line.count("|") == table[header].count("|") for line in body)
    csv = (tmp_path / "stability.csv").read_text().splitlines()
    assert len(csv) == 1 + len(rows)
    record = json.loads((tmp_path / "stability.json").read_text())
    svdpi_runs = [r for r in record["runs"] if r["method"] == "svd-pi"]
    assert svdpi_runs
    assert not any(r["diverged"] for r in svdpi_runs)
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in svdpi_runs)
    # --report-only rebuilds the same table from the JSON record.
    before = (tmp_path / "stability.md").read_text()
    study.main(["--report-only", "--output", str(tmp_path)])
    assert (tmp_path / "stability.md").read_text() == before


def test_a_diverging_run_is_reported_as_such(monkeypatch):
    """A NaN in the eigendecomposition must end the run as diverged, not crash it."""

    def broken_eig(cov):
        values, vectors = study.eig_svdpi(cov)
        return values * float("nan"), vectors

    monkeypatch.setitem(study.__dict__, "eig_svdpi", broken_eig)
    data = study.synthetic_cifar(32, 8, 8)
    result = study.train_one("svd-pi", 4, 0, data, steps=2, batch_size=16, lr=0.1, pi_iters=3)
    assert result.diverged
    assert result.diverged_at_step == 0
    assert result.test_accuracy is None


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--group-sizes", "0"], "--group-sizes: must be >= 1"),
        (["--group-sizes", "3"], "must divide the 64 whitened channels"),
        (["--group-sizes", "4", "4"], "--group-sizes has repeated values"),
        (["--seeds", "0"], "--seeds: must be >= 1"),
        (["--steps", "0"], "--steps: must be >= 1"),
        (["--batch-size", "1"], "--batch-size: must be >= 2"),
        (["--quick", "--batch-size", "65"], "larger than the 64 training images"),
        (["--lr", "0"], "--lr: must be a finite number > 0"),
        (["--lr", "inf"], "--lr: must be a finite number > 0"),
        (["--pi-iters", "0"], "--pi-iters: must be >= 1"),
        (["--image-size", "0"], "--image-size: must be >= 1"),
        (["--train-size", "1"], "--train-size: must be >= 2"),
        (["--test-size", "0"], "--test-size: must be >= 1"),
        (["--threads", "0"], "--threads: must be >= 1"),
        (["--methods", "svd-pi", "svd-pi"], "--methods has repeated values"),
        (["--dataset", "cifar10"], "--dataset: invalid choice"),
        (["--dataset", "digits", "--train-size", "1349"], "the digits data set has 1348"),
        (["--dataset", "digits", "--test-size", "450"], "the digits data set has 449"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flags_are_argparse_errors(argv, message, capsys):
    # 0.2: --group-sizes 0 and --seeds 0 raised ZeroDivisionError.
    with pytest.raises(SystemExit) as info:
        study.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "error:" in err.strip().splitlines()[-1]


def test_report_only_without_an_earlier_run_is_an_argparse_error(tmp_path, capsys):
    # 0.2 ended in a FileNotFoundError traceback.
    with pytest.raises(SystemExit) as info:
        study.main(["--report-only", "--output", str(tmp_path)])
    assert info.value.code == 2
    assert "--report-only: no earlier run in" in capsys.readouterr().err
    (tmp_path / "stability.json").write_text("{}")
    with pytest.raises(SystemExit) as info:
        study.main(["--report-only", "--output", str(tmp_path)])
    assert "is not a record of this study" in capsys.readouterr().err


def test_output_under_a_file_is_an_argparse_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for output, message in [
        (tmp_path / "file", "is a file, not a folder"),
        (tmp_path / "file" / "x", "is a file, so no folder can be made under it"),
    ]:
        with pytest.raises(SystemExit):
            study.parse_args(["--output", str(output)])
        assert message in capsys.readouterr().err


def test_explicit_flags_win_over_quick():
    # 0.2's --quick silently replaced --seeds 2, --steps 5, ... by its own values.
    args = study.parse_args(["--quick", "--seeds", "2", "--steps", "5", "--group-sizes", "8"])
    assert (args.seeds, args.steps, args.group_sizes) == (2, 5, [8])
    assert (args.batch_size, args.train_size, args.image_size) == (16, 64, 8)  # --quick's
    args = study.parse_args(["--quick"])
    assert {name: getattr(args, name) for name in study.QUICK} == study.QUICK
    args = study.parse_args([])
    assert {name: getattr(args, name) for name in study.DEFAULTS} == study.DEFAULTS
    args = study.parse_args(["--dataset", "digits"])
    assert (args.train_size, args.test_size) == study.DIGITS_SPLIT  # the whole split
    args = study.parse_args(["--dataset", "digits", "--quick", "--train-size", "100"])
    assert (args.train_size, args.test_size) == (100, 32)


# -- real images: scikit-learn's digits ------------------------------------------------


def test_digits_are_real_images_with_a_fixed_split():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    x_train, y_train, x_test, y_test = study.digits_images(16)
    assert (len(x_train), len(x_test)) == study.DIGITS_SPLIT
    assert x_train.shape[1:] == x_test.shape[1:] == (3, 16, 16)
    assert x_train.dtype == torch.float32
    assert torch.equal(x_train[:, 0], x_train[:, 2])  # three identical channels
    assert abs(float(x_train.mean())) < 1e-5  # standardised on the training set
    assert float(x_train.std()) == pytest.approx(1.0, rel=1e-3)
    # The fixed split: every fourth image held out, every class on both sides.
    digits = load_digits()
    held_out = torch.arange(len(digits.target)) % 4 == 3
    assert torch.equal(y_test, torch.as_tensor(digits.target)[held_out])
    assert torch.equal(y_train, torch.as_tensor(digits.target)[~held_out])
    assert set(y_test.tolist()) == set(y_train.tolist()) == set(range(10))
    # At the native size the images are the digits, rescaled.
    native, _, _, _ = study.digits_images(8)
    reference = torch.as_tensor(digits.images[~held_out.numpy()], dtype=torch.float32)
    correlation = torch.corrcoef(torch.stack([native[:, 0].flatten(), reference.flatten()]))
    assert float(correlation[0, 1]) > 0.9999
    # Same call, same tensors.
    assert torch.equal(study.digits_images(16)[0], x_train)


def test_tiny_run_on_digits_end_to_end(tmp_path):
    pytest.importorskip("sklearn")
    rows = study.main(
        ["--dataset", "digits", "--quick", "--methods", "eigh", "svd-pi", "--output",
         str(tmp_path)]
    )  # fmt: skip
    assert [(r["d"], r["method"]) for r in rows] == [
        (d, m) for d in (4, 16) for m in ("eigh", "svd-pi")
    ]
    record = json.loads((tmp_path / "stability.json").read_text())
    assert record["settings"]["dataset"] == "digits"
    assert "real 8×8 images (scikit-learn's digits" in (tmp_path / "machine.txt").read_text()
    assert all(r["max_gradient_norm"] > 0 for r in rows)
    assert "largest gradient norm" in (tmp_path / "stability.csv").read_text().splitlines()[0]
    assert (tmp_path / "stability.png").stat().st_size > 0
