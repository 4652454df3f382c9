"""Global covariance pooling (MPN-COV / iSQRT-COV) with svdpi's matrix power."""

from __future__ import annotations

import contextlib
import math

import array_api_compat.torch as xp_torch

import torch
from svdpi.adapter import check_exponent, check_num_iters, check_real, grouped_covariance
from svdpi.functions import Power
from torch import nn

from ._eig import _can_read_values
from ._matrix_functions import check_matrix_method
from ._options import check_bool
from ._spectral import apply, make_map

OUTPUTS = ("triu", "matrix")


class CovariancePooling(nn.Module):
    r"""Global covariance pooling: feature maps → a power of their channel covariance.

    The second-order pooling of MPN-COV (Li, Xie, Wang & Zhang, ICCV 2017) and
    iSQRT-COV (Li, Xie, Wang & Gao, CVPR 2018), which replaces the global
    average pooling before a network's classifier. For each sample, with the
    ``M = H·W`` spatial positions as observations of ``C`` channels,

    .. math::

        Σ = \frac{1}{M} X̄ X̄ᵀ + ε I, \qquad
        \text{out} = \begin{cases}
            (Σ / \operatorname{tr} Σ)^p \, (\operatorname{tr} Σ)^p & \text{normalize\_trace} \\
            Σ^p & \text{otherwise}
        \end{cases}

    where ``X̄`` is the centred ``C × M`` feature matrix, and the matrix power
    is :func:`svdpi.torch.matrix_power` (exact forward, gradient by
    ``method``). The output is the upper triangle of the ``C × C`` result,
    row by row, as a vector of ``C(C+1)/2`` features (or the matrix itself).
    All samples are processed as one batch.

    Parameters
    ----------
    p : float, default 0.5
        Exponent: 1/2 is the matrix square root of MPN-COV and iSQRT-COV
        (their best-performing normalisation), 1 plain covariance pooling.
    eps : float, default 1e-5
        Added to the covariance's diagonal before the power. With fewer
        positions than channels (``H·W < C``) the covariance is singular,
        and the derivative of ``λ^p`` for ``0 < p < 1`` is unbounded near 0:
        with ``eps=0`` a singular covariance has no gradient, and the
        gradient of that sample comes out NaN.
    normalize_trace : bool, default False
        Apply iSQRT-COV's pre-normalisation ``Σ / tr Σ`` and post-compensation by
        ``(tr Σ)^p``. The forward value is ``Σ^p`` either way (up to
        rounding); the gradient flows through the trace as well, and the
        matrix given to the eigensolver and to the power-iteration gradient
        has unit trace whatever the scale of the features. A sample whose
        covariance has zero trace (constant feature maps with ``eps=0``)
        has nothing to divide by and is not normalised: its result is
        ``Σ^p`` of the zero matrix as with ``normalize_trace=False`` (zero
        for ``p > 0``), not NaN.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient of the matrix power, see :func:`svdpi.torch.matrix_power`:
        the derivative of ``Σ^p`` (``"exact"``, the default since svdpi 0.3,
        ``"pi"`` before) or the paper's power-iteration gradient (``"pi"``),
        which differs from it by up to 25–88 % on clustered spectra
        (``benchmarks/pi_vs_exact.py``).
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    output : {"triu", "matrix"}, default "triu"
        ``"triu"``: the upper triangle as ``(N, C(C+1)/2)``; ``"matrix"``:
        the symmetric ``(N, C, C)`` matrix.
    check_finite : bool, default True
        Raise ``ValueError`` when a covariance has NaN or infinite entries,
        saying whether the input is not finite or its covariance overflowed
        (at the cost of one host read per forward pass, a GPU
        synchronisation; skipped while ``torch.compile`` traces,
        under ``torch.func`` transforms and on the meta device). With
        ``False`` a non-finite input gives NaN output on a GPU, or a
        ``torch.linalg.LinAlgError`` from the CPU eigensolver.

    Notes
    -----
    Input: ``(N, C, *)`` with at least one spatial dimension, e.g.
    ``(N, C, H, W)`` (channels-last layouts work too). Float16 and bfloat16
    input (e.g. under ``torch.autocast``) is pooled in float32, float64 in
    float64. Output: ``(N, C(C+1)/2)``, or ``(N, C, C)`` with
    ``output="matrix"``, in the input's dtype.
    An empty batch gives an empty output; input without spatial positions
    raises ``ValueError``. Double backward (``create_graph=True``) and
    Hessians work with ``method="exact"``; the other methods raise
    ``RuntimeError`` there (see :func:`svdpi.torch.spectral_map`).

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> pool = svdpi.torch.CovariancePooling()
    >>> x = torch.randn(8, 16, 7, 7, requires_grad=True)
    >>> y = pool(x)
    >>> y.shape
    torch.Size([8, 136])
    >>> y.sum().backward()
    >>> x.grad.shape
    torch.Size([8, 16, 7, 7])

    The square root, squared, is the covariance:

    >>> pool = svdpi.torch.CovariancePooling(eps=0.0, output="matrix")
    >>> x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    >>> root = pool(x)
    >>> centred = x.flatten(2) - x.flatten(2).mean(-1, keepdim=True)
    >>> torch.allclose(root @ root, centred @ centred.mT / 100)
    True
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        eps: float = 1e-5,
        normalize_trace: bool = False,
        method: str = "exact",
        num_iters: int = 19,
        output: str = "triu",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.p = check_exponent(p)
        self.eps = check_real(eps, "eps", minimum=0.0)
        self.normalize_trace = check_bool(normalize_trace, "normalize_trace")
        self.method = check_matrix_method(method)
        self.num_iters = check_num_iters(num_iters)
        if not isinstance(output, str) or output not in OUTPUTS:
            raise ValueError(f"output must be 'triu' or 'matrix', got {output!r}")
        self.output = output
        self.check_finite = check_bool(check_finite, "check_finite")

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, eps={self.eps}, normalize_trace={self.normalize_trace}, "
            f"method={self.method!r}, num_iters={self.num_iters}, output={self.output!r}, "
            f"check_finite={self.check_finite}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Half-precision input (e.g. under torch.autocast) is pooled in float32,
        # with autocast off: the eigendecomposition and λ^p need the range and
        # precision. The output has the input's dtype, as BatchNorm's has.
        self._check_input(x)
        # (The meta device has no autocast: torch.autocast raises there.)
        autocast = (
            contextlib.nullcontext()
            if x.device.type == "meta"
            else torch.autocast(device_type=x.device.type, enabled=False)
        )
        with autocast:
            return self._pool(self.covariance(x), x).to(x.dtype)

    def _pool(self, cov: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        spec = make_map(Power(self.p), self.method, self.num_iters, caller=type(self).__name__)
        if self.normalize_trace:
            trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
            self._check_finite(x, cov, trace)
            # A zero trace (constant features, eps = 0) has nothing to divide
            # by: such a sample is not normalised (Σ^p as without the option).
            # Chosen by where, without a host read.
            trace = torch.where(trace > 0, trace, torch.ones_like(trace))
            result = apply(cov / trace, spec, check_finite=False) * trace.pow(self.p)
        else:
            self._check_finite(x, cov, None)
            result = apply(cov, spec, check_finite=False)
        if self.output == "matrix":
            return result
        c = result.shape[-1]
        rows, cols = torch.triu_indices(c, c, device=result.device)
        return result[:, rows, cols]

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample channel covariance ``X̄ X̄ᵀ / M + eps·I``, shape ``(N, C, C)``.

        :func:`svdpi.adapter.grouped_covariance` over the spatial axes (one
        group), in float64 for float64 input, else in float32.
        """
        self._check_input(x)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        features = x.to(compute)
        sample_axes = tuple(range(2, x.dim()))
        moments = grouped_covariance(features, sample_axes=sample_axes, xp=xp_torch)
        cov = moments.covariance[:, 0]
        if self.eps:
            eye = torch.eye(x.shape[1], dtype=compute, device=x.device)
            cov = cov + self.eps * eye
        return cov

    def _check_finite(self, x, cov, trace) -> None:
        """Raise if ``cov`` (or ``trace``) is not finite, saying why: one host read if it is."""
        if not self.check_finite or cov.device.type == "meta" or not _can_read_values():
            return
        finite = torch.isfinite(cov).all()
        if trace is not None:  # the sum of a finite diagonal can still overflow
            finite = finite & torch.isfinite(trace).all()
        if bool(finite):
            return
        name = type(self).__name__
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: the input has NaN or infinite entries")
        dtype = str(cov.dtype).removeprefix("torch.")
        largest = float(x.detach().abs().amax())
        hint = (
            "rescale the input"
            if cov.dtype == torch.float64
            else "pass float64 input (x.double()) or rescale the input"
        )
        what = "covariance's trace" if bool(torch.isfinite(cov).all()) else "covariance"
        raise ValueError(
            f"{name}: the input is finite (largest magnitude {largest:.3g}) but its {what} "
            f"overflowed {dtype} (largest {torch.finfo(cov.dtype).max:.3g}): {hint}"
        )

    @staticmethod
    def _check_input(x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"input must have a floating dtype, got {x.dtype}")
        if x.dim() < 3:
            raise ValueError(
                f"input must have shape (N, C, *) with at least one spatial dimension, "
                f"got shape {tuple(x.shape)}"
            )
        if math.prod(x.shape[2:]) == 0:
            raise ValueError(
                f"input has no spatial positions to pool over, got shape {tuple(x.shape)}"
            )
