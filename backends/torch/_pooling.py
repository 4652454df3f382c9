"""Global covariance pooling (MPN-COV / iSQRT-COV) with svdpi's matrix power."""

from __future__ import annotations

import contextlib
import math

import torch
from svdpi.adapter import check_exponent, check_num_iters
from torch import nn

from ._matrix_functions import check_matrix_method, matrix_power

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
        and the derivative of ``λ^p`` for ``p < 1`` is unbounded near 0.
    normalize_trace : bool, default False
        Apply iSQRT-COV's pre-normalisation ``Σ / tr Σ`` and post-compensation by
        ``(tr Σ)^p``. The forward value is ``Σ^p`` either way (up to
        rounding); the gradient flows through the trace as well, and the
        matrix given to the eigensolver and to the power-iteration gradient
        has unit trace whatever the scale of the features.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Gradient of the matrix power, see :func:`svdpi.torch.matrix_power`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    output : {"triu", "matrix"}, default "triu"
        ``"triu"``: the upper triangle as ``(N, C(C+1)/2)``; ``"matrix"``:
        the symmetric ``(N, C, C)`` matrix.

    Notes
    -----
    Input: ``(N, C, *)`` with at least one spatial dimension, e.g.
    ``(N, C, H, W)`` (channels-last layouts work too). Float16 and bfloat16
    input (e.g. under ``torch.autocast``) is pooled in float32, float64 in
    float64. Output: ``(N, C(C+1)/2)``, or ``(N, C, C)`` with
    ``output="matrix"``, in the input's dtype.
    An empty batch gives an empty output; input without spatial positions
    raises ``ValueError``. Double backward is not supported (see
    :func:`svdpi.torch.matrix_power`).

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
        method: str = "pi",
        num_iters: int = 19,
        output: str = "triu",
    ) -> None:
        super().__init__()
        self.p = check_exponent(p)
        eps = float(eps)
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = eps
        self.normalize_trace = bool(normalize_trace)
        self.method = check_matrix_method(method)
        self.num_iters = check_num_iters(num_iters)
        if output not in OUTPUTS:
            raise ValueError(f"output must be 'triu' or 'matrix', got {output!r}")
        self.output = output

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, eps={self.eps}, normalize_trace={self.normalize_trace}, "
            f"method={self.method!r}, num_iters={self.num_iters}, output={self.output!r}"
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
            return self._pool(self.covariance(x)).to(x.dtype)

    def _pool(self, cov: torch.Tensor) -> torch.Tensor:
        if self.normalize_trace:
            trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
            result = matrix_power(
                cov / trace, self.p, method=self.method, num_iters=self.num_iters
            ) * trace.pow(self.p)
        else:
            result = matrix_power(cov, self.p, method=self.method, num_iters=self.num_iters)
        if self.output == "matrix":
            return result
        c = result.shape[-1]
        rows, cols = torch.triu_indices(c, c, device=result.device)
        return result[:, rows, cols]

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample channel covariance ``X̄ X̄ᵀ / M + eps·I``, shape ``(N, C, C)``.

        In float64 for float64 input, else in float32.
        """
        self._check_input(x)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        positions = math.prod(x.shape[2:])
        features = x.to(compute).flatten(2)
        centred = features - features.mean(dim=-1, keepdim=True)
        cov = centred @ centred.mT / positions
        if self.eps:
            eye = torch.eye(x.shape[1], dtype=compute, device=x.device)
            cov = cov + self.eps * eye
        return cov

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
