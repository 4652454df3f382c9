"""svdpi.Truncation: the truncation options checked once, and their mask."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import from_numpy, to_numpy

import svdpi


def test_a_frozen_hashable_value():
    rules = svdpi.Truncation(min_eigenvalue=1e-5, max_energy=0.99)
    assert rules == svdpi.Truncation(1e-5, 0.99, "preceding")
    assert hash(rules) == hash(svdpi.Truncation(1e-5, 0.99))
    with pytest.raises(AttributeError):
        rules.max_energy = 0.5
    assert rules.truncates
    assert not svdpi.Truncation().truncates
    # Options are stored as floats (a NumPy scalar or an int in, a float out).
    assert type(svdpi.Truncation(max_energy=np.float32(0.5)).max_energy) is float
    assert svdpi.Truncation(max_energy=1).max_energy == 1.0


def test_the_mask_is_truncation_mask(xp):
    w = from_numpy(xp, np.array([[6.0, 3.0, 1.0, 0.0], [4.0, 3.0, 2.0, 1.0]]))
    for options in (
        {},
        {"min_eigenvalue": 0.5},
        {"max_energy": 0.9},
        {"max_energy": 1 - 1e-5, "energy_rule": "inclusive"},
        {"min_eigenvalue": 1.5, "max_energy": 0.95},
    ):
        expected = to_numpy(svdpi.truncation_mask(w, **options))
        np.testing.assert_array_equal(to_numpy(svdpi.Truncation(**options).mask(w)), expected)
    assert to_numpy(svdpi.Truncation(max_energy=0.9).mask(w)).tolist() == [
        [True, True, False, False],
        [True, True, True, False],
    ]


@pytest.mark.parametrize("rule", ["preceding", "inclusive"])
def test_the_energy_rule_keeps_the_leading_eigenpair(xp, rule):
    """Issue 18: "inclusive" dropped every pair of a rank-one group; a whitening then outputs 0.

    The top eigenpair alone holds more than max_energy here (two channels that
    are copies of each other, the paper's 1 − eps threshold).
    """
    rank_one = from_numpy(xp, np.array([2.0, 1e-12]))
    mask = to_numpy(svdpi.truncation_mask(rank_one, max_energy=1 - 1e-4, energy_rule=rule))
    assert mask.tolist() == [True, False]
    # The zero matrix: no positive energy at all, the leading pair is kept too.
    zero = from_numpy(xp, np.zeros(3))
    assert to_numpy(svdpi.truncation_mask(zero, max_energy=0.5, energy_rule=rule)).tolist() == [
        True,
        False,
        False,
    ]
    # min_eigenvalue is an absolute threshold: it may drop everything.
    assert not to_numpy(svdpi.truncation_mask(rank_one, min_eigenvalue=5.0)).any()


def test_the_leading_pair_of_a_rank_one_group_whitens_it(xp):
    """With the kept top pair, a rank-one group is whitened along its one direction."""
    x = np.array([[1.0, -1.0, 2.0, -2.0], [1.0, -1.0, 2.0, -2.0]])  # two equal channels
    cov = x @ x.T / 4
    w, v = svdpi.eig(from_numpy(xp, cov))
    mask = svdpi.truncation_mask(w, max_energy=1 - 1e-4, energy_rule="inclusive")
    y = to_numpy(svdpi.zca_whitening_matrix(w, v, mask=mask)) @ x
    np.testing.assert_allclose(y @ y.T / 4, np.full((2, 2), 0.5), atol=1e-12)


def test_empty_spectra(xp):
    for shape in [(0, 3), (2, 0)]:
        w = from_numpy(xp, np.zeros(shape))
        assert tuple(svdpi.Truncation(0.1, 0.5).mask(w).shape) == shape


def test_the_mask_traces_under_torch_compile_in_a_fresh_process():
    pytest.importorskip("torch")
    import subprocess
    import sys

    code = (
        "import torch, svdpi\n"
        "rules = svdpi.Truncation(min_eigenvalue=1e-3, max_energy=0.9, energy_rule='inclusive')\n"
        "f = torch.compile(lambda w: rules.mask(w), fullgraph=True, backend='eager')\n"
        "w = torch.tensor([[4.0, 3.0, 2.0, 1e-4]])\n"
        "assert f(w).tolist() == rules.mask(w).tolist() == [[True, True, False, False]]\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=600
    )
    assert result.stdout.strip() == "ok", result.stderr[-3000:]
