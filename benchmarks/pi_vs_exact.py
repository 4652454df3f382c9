"""How far the paper's "pi" gradient of a matrix function is from its derivative ("exact").

Run from the repository root: ``python benchmarks/pi_vs_exact.py`` (``--quick``
for fewer samples). NumPy, float64, no timing: the numbers of the theory
page's table and of the 0.3 changelog entry, where the matrix functions'
default changed from ``"pi"`` to ``"exact"``.

For each spectrum, ``--samples`` random orthogonal eigenbases and random
cotangents; the error is ``‖pi − exact‖_F / ‖exact‖_F`` of the VJP of
``A^{-1/2}`` (``inv_sqrtm``), ``log A`` (``logm``) and ``A^{1/2}``
(``sqrtm``), ``num_iters = 19``; median and maximum over the samples.
"""

from __future__ import annotations

import argparse

import numpy as np

import svdpi

SPECTRA = {
    "separated: 4, 2, 1, 0.5": [4.0, 2.0, 1.0, 0.5],
    "ratios 0.9: 1, 0.9, 0.81, 0.729": [1.0, 0.9, 0.81, 0.729],
    "relative gap 1e-4: 2, 1 + 1e-4, 1, 0.5": [2.0, 1.0 + 1e-4, 1.0, 0.5],
    # The float32 covariance of real images of issue 18 (d = 16).
    "real-image covariance, d = 16": [
        3.3348064, 0.96776694, 0.24185362, 0.05995977, 0.036464404, 0.023448948,
        0.0063433894, 0.0054093115, 0.002350622, 0.0013302673, 0.00048606767,
        0.00019676512, 0.00010180868, 5.992971e-05, 5.360129e-05, 1.660959e-05,
    ],
}  # fmt: skip

FUNCTIONS = {
    "inv_sqrtm": lambda w, v, g, m: svdpi.matrix_power_vjp(w, v, -0.5, g, method=m),
    "logm": lambda w, v, g, m: svdpi.matrix_log_vjp(w, v, g, method=m),
    "sqrtm": lambda w, v, g, m: svdpi.matrix_power_vjp(w, v, 0.5, g, method=m),
}


def errors(spectrum, samples: int, rng) -> dict[str, list[float]]:
    """Relative errors of "pi" against "exact" for every function, one per sample."""
    found = {name: [] for name in FUNCTIONS}
    n = len(spectrum)
    for _ in range(samples):
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        a = (q * np.asarray(spectrum)) @ q.T
        w, v = svdpi.eig((a + a.T) / 2)
        g = rng.standard_normal((n, n))
        for name, vjp in FUNCTIONS.items():
            exact = vjp(w, v, g, "exact")
            found[name].append(np.linalg.norm(vjp(w, v, g, "pi") - exact) / np.linalg.norm(exact))
    return found


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="eigenbases per spectrum")
    parser.add_argument("--quick", action="store_true", help="3 samples (a smoke test)")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    samples = 3 if args.quick else args.samples
    rng = np.random.default_rng(0)
    lines = [f"||pi - exact||_F / ||exact||_F (median, max over {samples} samples), float64"]
    lines.append(f"{'spectrum':42s}" + "".join(f"{name:>22s}" for name in FUNCTIONS))
    for label, spectrum in SPECTRA.items():
        found = errors(spectrum, samples, rng)
        cells = "".join(
            f"{np.median(x):>12.2g}, {np.max(x):<8.2g}" for x in (found[n] for n in FUNCTIONS)
        )
        lines.append(f"{label:42s}{cells}")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
