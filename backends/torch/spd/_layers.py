"""The SPDNet eigenvalue layers (ReEig, LogEig, ExpEig, PowerEig) and vectorisation.

Each eigenvalue layer is one :func:`svdpi.torch.spectral_map` call (see
:mod:`._eigen`); the layers hold options, no parameters.
"""

from __future__ import annotations

import torch
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    check_exponent,
    check_method,
    check_num_iters,
    check_real,
)
from svdpi.functions import Clamp, Exp, Log, Power
from torch import nn

from .._options import check_bool
from ._eigen import _apply
from ._vectorize import unvectorize, vectorize


class _EigenLayer(nn.Module):
    """Options every eigenvalue layer has: the gradient rule and the finiteness check."""

    _needs_spd = False
    _hint = ""

    def __init__(self, *, method: str, num_iters: int, check_finite: bool, check_spd: bool):
        super().__init__()
        self.method = check_method(method, MATRIX_FUNCTION_METHODS)
        self.num_iters = check_num_iters(num_iters)
        self.check_finite = check_bool(check_finite, "check_finite")
        self.check_spd = check_bool(check_spd, "check_spd") if self._needs_spd else False

    def _function(self):
        raise NotImplementedError

    def _options_repr(self) -> list[str]:
        text = [f"method={self.method!r}"]
        if self.method in ("pi", "taylor"):
            text.append(f"num_iters={self.num_iters}")
        text.append(f"check_finite={self.check_finite}")
        if self._needs_spd:
            text.append(f"check_spd={self.check_spd}")
        return text

    def extra_repr(self) -> str:
        return ", ".join(self._options_repr())

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return _apply(
            x,
            self._function(),
            f"{type(self).__name__} input",
            method=self.method,
            num_iters=self.num_iters,
            check_finite=self.check_finite,
            check_spd=self.check_spd,
            hint=self._hint,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._map(x)


class ReEig(_EigenLayer):
    """Eigenvalue rectification ``X ↦ V max(Λ, threshold) Vᵀ`` (SPDNet's ReEig).

    The nonlinearity of SPD networks (Huang & Van Gool, AAAI 2017): every
    eigenvalue below ``threshold`` is raised to it, so the output is SPD and
    the clamped eigenvalues are *equal*. The default gradient is the exact
    derivative of this function (:class:`svdpi.functions.Clamp` through
    :func:`svdpi.torch.spectral_map`): exact also across those ties, where
    thresholded Loewner-matrix gradients are not.

    Parameters
    ----------
    threshold : float, default 1e-4
        The eigenvalue floor, ``>= 0`` (0 projects onto the PSD cone).
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule of :func:`svdpi.torch.spectral_map`.
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf input (one host read per call;
        skipped while ``torch.compile`` traces, under ``torch.func`` and on
        the meta device).

    Notes
    -----
    Input ``(..., n, n)``, symmetric (only ``(X + Xᵀ)/2`` is used; any
    eigenvalues); output the same shape and dtype. Half-precision input
    and ``torch.autocast`` compute in float32. Empty batches give empty
    output.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import ReEig
    >>> layer = ReEig(threshold=0.5)
    >>> x = torch.diag(torch.tensor([2.0, 0.1, 0.2], dtype=torch.float64)).requires_grad_()
    >>> y = layer(x)
    >>> y.diagonal().detach()
    tensor([2.0000, 0.5000, 0.5000], dtype=torch.float64)
    >>> y.trace().backward()  # the clamped eigenvalues do not move the output
    >>> x.grad.diagonal()
    tensor([1., 0., 0.], dtype=torch.float64)
    """

    def __init__(
        self,
        threshold: float = 1e-4,
        *,
        method: str = "exact",
        num_iters: int = 19,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            method=method, num_iters=num_iters, check_finite=check_finite, check_spd=False
        )
        self.threshold = check_real(threshold, "threshold", minimum=0.0)

    def _function(self):
        return Clamp(self.threshold)

    def extra_repr(self) -> str:
        return ", ".join([f"threshold={self.threshold}", *self._options_repr()])


class LogEig(_EigenLayer):
    """Matrix logarithm ``X ↦ V log(Λ) Vᵀ`` of SPD matrices (SPDNet's LogEig).

    Maps SPD matrices to the tangent space at the identity (symmetric
    matrices, a vector space) for Euclidean layers after it.

    Parameters
    ----------
    vectorize : bool, default False
        Return :func:`svdpi.torch.spd.functional.vectorize` of the result,
        ``(..., n(n+1)/2)`` with the off-diagonal entries times √2 (the
        Euclidean norm is the Frobenius norm), ready for ``nn.Linear``.
        Default: the ``(..., n, n)`` matrices.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule of :func:`svdpi.torch.spectral_map`.
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf input.
    check_spd : bool, default True
        Raise ``ValueError`` when an input matrix is not positive definite
        (a Cholesky factorisation, read with the finiteness check in one
        host read). Pass ``False`` where the input is SPD by construction
        (after :class:`ReEig`) to save the factorisation. Either way,
        eigenvalues below svdpi's floor ``n · eps · λ_max`` (what an
        eigensolver can tell from 0) are raised to it, as in
        :func:`svdpi.torch.logm`.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import LogEig
    >>> x = torch.diag(torch.tensor([1.0, torch.e], dtype=torch.float64))
    >>> LogEig()(x)
    tensor([[0., 0.],
            [0., 1.]], dtype=torch.float64)
    >>> LogEig(vectorize=True)(x)
    tensor([0., 0., 1.], dtype=torch.float64)
    """

    _needs_spd = True
    _hint = ": apply ReEig first, or add a ridge"

    def __init__(
        self,
        *,
        vectorize: bool = False,
        method: str = "exact",
        num_iters: int = 19,
        check_finite: bool = True,
        check_spd: bool = True,
    ) -> None:
        super().__init__(
            method=method, num_iters=num_iters, check_finite=check_finite, check_spd=check_spd
        )
        self.vectorize = check_bool(vectorize, "vectorize")

    def _function(self):
        return Log()

    def extra_repr(self) -> str:
        return ", ".join([f"vectorize={self.vectorize}", *self._options_repr()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self._map(x)
        return vectorize(result) if self.vectorize else result


class ExpEig(_EigenLayer):
    """Matrix exponential ``X ↦ V exp(Λ) Vᵀ`` of symmetric matrices (ExpEig), SPD output.

    The inverse of :class:`LogEig`: from the tangent space back to SPD
    matrices.

    Parameters
    ----------
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule of :func:`svdpi.torch.spectral_map`.
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf input.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import ExpEig, LogEig
    >>> x = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> torch.allclose(ExpEig()(LogEig()(x)), x)
    True
    """

    def __init__(
        self, *, method: str = "exact", num_iters: int = 19, check_finite: bool = True
    ) -> None:
        super().__init__(
            method=method, num_iters=num_iters, check_finite=check_finite, check_spd=False
        )

    def _function(self):
        return Exp()


class PowerEig(_EigenLayer):
    """Matrix power ``X ↦ V Λ^p Vᵀ`` of SPD matrices (``p = 1/2``: the square root).

    The power normalisation of second-order pooling networks, and a
    family between ``LogEig`` (``(X^p − I)/p → log X`` as ``p → 0``) and
    the identity.

    Parameters
    ----------
    exponent : float
        ``p``, a finite real number.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule of :func:`svdpi.torch.spectral_map`.
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf input.
    check_spd : bool, default True
        Raise ``ValueError`` when an input matrix is not positive definite;
        ``False`` accepts singular PSD input (for ``p > 0``).

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import PowerEig
    >>> x = torch.tensor([[5.0, 4.0], [4.0, 5.0]], dtype=torch.float64)
    >>> PowerEig(0.5)(x).round(decimals=12)
    tensor([[2., 1.],
            [1., 2.]], dtype=torch.float64)
    """

    _needs_spd = True

    def __init__(
        self,
        exponent: float,
        *,
        method: str = "exact",
        num_iters: int = 19,
        check_finite: bool = True,
        check_spd: bool = True,
    ) -> None:
        super().__init__(
            method=method, num_iters=num_iters, check_finite=check_finite, check_spd=check_spd
        )
        self.exponent = check_exponent(exponent, "exponent")

    def _function(self):
        return Power(self.exponent)

    def extra_repr(self) -> str:
        return ", ".join([f"exponent={self.exponent}", *self._options_repr()])


class Vectorize(nn.Module):
    """Symmetric matrices to vectors: upper triangle, off-diagonal × √2 (norm-preserving).

    ``(..., n, n) → (..., n(n+1)/2)``, see
    :func:`svdpi.torch.spd.functional.vectorize`.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import Unvectorize, Vectorize
    >>> x = torch.tensor([[1.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
    >>> Vectorize()(x)
    tensor([1.0000, 2.8284, 3.0000], dtype=torch.float64)
    >>> torch.allclose(Unvectorize()(Vectorize()(x)), x)
    True
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vectorize(x)


class Unvectorize(nn.Module):
    """The inverse of :class:`Vectorize`: ``(..., n(n+1)/2) → (..., n, n)``, symmetric.

    See :func:`svdpi.torch.spd.functional.unvectorize`.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import Unvectorize
    >>> Unvectorize()(torch.zeros(4, 6)).shape
    torch.Size([4, 3, 3])
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return unvectorize(v)
