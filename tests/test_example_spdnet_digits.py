"""examples/spdnet_digits.py: a tiny run writes its outputs; flags are checked when parsed."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "spdnet_digits.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("spdnet_digits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("method", ["exact", "pi"])
def test_quick_run_writes_the_summary_and_the_figure(example, tmp_path, method):
    out = tmp_path / "run"
    summary = example.main(["--quick", "--out-dir", str(out), "--method", method])
    assert 0.0 <= summary["spdnet"]["clamped_eigenvalue_fraction"] <= 1.0
    written = json.loads((out / "summary.json").read_text())
    assert written["spdnet_test_accuracy"] == summary["spdnet_test_accuracy"]
    for key in ("spdnet_test_accuracy", "baseline_test_accuracy"):
        assert 0.0 <= written[key] <= 1.0
    # Five epochs on 300 images learn (chance is 0.1; about 0.8 measured).
    assert written["spdnet_test_accuracy"] > 0.5
    assert written["baseline_test_accuracy"] > 0.5
    assert written["config"]["method"] == method
    assert len(written["spdnet"]["history"]["test_accuracy"]) == 5
    assert math.isfinite(written["spdnet"]["gradient_relative_difference_to_exact"])
    if method == "exact":
        assert written["spdnet"]["gradient_relative_difference_to_exact"] == 0.0
    assert (out / "training_curves.png").stat().st_size > 1000


def test_features_are_one_spd_matrix_per_image(example):
    import torch

    images, labels = example.load_images()
    assert images.shape == (1797, 8, 8)
    assert labels.shape == (1797,)
    features = example.pixel_features(images[:5], upsample=2)
    assert features.shape == (5, len(example.FEATURE_SETS["full"]), 256)
    assert example.pixel_features(images[:5], 1, "basic").shape == (5, 5, 64)
    train, test = example.split(labels, 0.3, seed=0)
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    assert len(train) + len(test) == 1797
    cov = example.region_covariances(example.pixel_features(images, 2), train, ridge=1e-3)
    assert cov.shape == (1797, 10, 10)
    assert (torch.linalg.eigvalsh(cov) >= 1e-3 * (1 - 1e-9)).all()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs: must be >= 1"),
        (["--epochs", "x"], "--epochs: must be an integer"),
        (["--batch-size", "1"], "--batch-size: must be >= 2"),
        (["--lr", "0"], "--lr: must be a finite number in (0, inf)"),
        (["--lr", "nan"], "--lr: must be a finite number"),
        (["--threshold", "0"], "--threshold: must be a finite number in (0, inf)"),
        (["--ridge", "-1"], "--ridge: must be a finite number in [0, inf)"),
        (["--upsample", "0"], "--upsample: must be >= 1"),
        (["--test-fraction", "1"], "--test-fraction: must be a finite number in (0, 1)"),
        (["--test-fraction", "0"], "--test-fraction: must be a finite number in (0, 1)"),
        (["--train-size", "19"], "--train-size: must be >= 20"),
        (["--threads", "0"], "--threads: must be >= 1"),
        (["--hidden", "12"], "--hidden 12 is larger than the 10 features"),
        (
            ["--features", "basic", "--hidden", "6"],
            "larger than the 5 features of --features basic",
        ),
        (["--features", "rgb"], "--features: invalid choice"),
        (["--hidden", "8,9"], "BiMap sizes must not increase"),
        (["--hidden", "8,0"], "must be >= 1"),
        (["--method", "taylor"], "--method: invalid choice"),
        (["--seed", "a"], "--seed: invalid int value"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flags_are_argparse_errors(example, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        example.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_out_dir_that_is_a_file_and_too_large_train_size(example, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        example.parse_args(["--out-dir", str(tmp_path / "file")])
    assert "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        example.main(["--quick", "--train-size", "5000", "--out-dir", str(tmp_path / "x")])
    assert "the training split has" in capsys.readouterr().err


def test_ablation_flags_build_the_model_they_name(example, tmp_path):
    summary = example.main(
        ["--quick", "--features", "basic", "--spd-batchnorm", "--no-tangent-batchnorm",
         "--hidden", "3", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    assert summary["data"]["matrix_size"] == 5
    model = example.make_spdnet(5, [3], 0.1, "exact", spd_batchnorm=True, tangent_batchnorm=False)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["SPDBatchNorm", "BiMap", "ReEig", "LogEig", "Linear"]


def test_explicit_flags_win_over_quick(example):
    args = example.parse_args(["--quick", "--epochs", "3", "--hidden", "9,7"])
    assert (args.epochs, args.hidden, args.train_size) == (3, [9, 7], example.QUICK["train_size"])
    args = example.parse_args([])
    assert (args.epochs, args.hidden, args.train_size) == (
        example.DEFAULTS["epochs"],
        example.DEFAULTS["hidden"],
        None,
    )
    assert example.parse_args(["--hidden", ""]).hidden == []
