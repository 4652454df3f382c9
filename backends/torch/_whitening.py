"""The paper's layers: grouped ZCA whitening and PCA denoising, BatchNorm-style modules."""

from __future__ import annotations

import dataclasses
import math

import array_api_compat.torch as xp_torch

import svdpi
import torch
from svdpi._validation import check_integer, check_method, check_num_iters
from svdpi._whitening import ENERGY_RULES
from torch import nn

from ._eig import _can_read_values
from ._kernels import GroupAffine, GroupMoments
from ._spectral import SpectralMap, spectral_map


def _positive_int(value, name: str) -> int:
    return check_integer(value, name, minimum=1)


def _nonnegative_float(value, name: str) -> float:
    value = float(value)
    if not value >= 0.0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class _Whitening(SpectralMap):
    """The ZCA whitening matrix of a covariance, truncated by the layer's rules."""

    method: str
    num_iters: int
    min_eigenvalue: float | None
    max_energy: float | None
    energy_rule: str

    def _mask(self, eigenvalues):
        if self.min_eigenvalue is None and self.max_energy is None:
            return None
        # Chosen per step from the eigenvalues: no gradient flows through the choice.
        return svdpi.truncation_mask(
            eigenvalues.detach(),
            min_eigenvalue=self.min_eigenvalue,
            max_energy=self.max_energy,
            energy_rule=self.energy_rule,
            xp=xp_torch,
        )

    def value(self, eigenvalues, eigenvectors):
        mask = self._mask(eigenvalues)
        return svdpi.zca_whitening_matrix(eigenvalues, eigenvectors, mask=mask, xp=xp_torch)

    def vjp(self, eigenvalues, eigenvectors, grad):
        return svdpi.zca_whitening_matrix_vjp(
            eigenvalues,
            eigenvectors,
            grad,
            mask=self._mask(eigenvalues),
            method=self.method,
            num_iters=self.num_iters,
            xp=xp_torch,
        )


@dataclasses.dataclass(frozen=True)
class _Projector(SpectralMap):
    """The projector on the ``n_components`` leading eigenvectors."""

    method: str
    num_iters: int
    n_components: int

    def value(self, eigenvalues, eigenvectors):
        return svdpi.pca_projector(eigenvectors, n_components=self.n_components, xp=xp_torch)

    def vjp(self, eigenvalues, eigenvectors, grad):
        return svdpi.pca_projector_vjp(
            eigenvalues,
            eigenvectors,
            grad,
            n_components=self.n_components,
            method=self.method,
            num_iters=self.num_iters,
            xp=xp_torch,
        )


class _GroupedEigenNorm(nn.Module):
    """What the whitening layers share: groups, buffers, statistics, input checks.

    A subclass defines ``_matrix(cov)``, the ``(G, d, d)`` map applied to the
    centred input in training (differentiable), and how its running
    statistics are kept.
    """

    # True in the synchronised subclasses (their statistics span a process group).
    _synchronised = False

    def __init__(
        self,
        num_features,
        num_groups,
        eps,
        momentum,
        affine,
        track_running_stats,
        method,
        num_iters,
        device,
        dtype,
    ):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        self.num_groups = _positive_int(num_groups, "num_groups")
        if self.num_features % self.num_groups:
            raise ValueError(
                f"num_features ({self.num_features}) must be divisible by num_groups "
                f"({self.num_groups})"
            )
        self.group_size = self.num_features // self.num_groups
        self.eps = _nonnegative_float(eps, "eps")
        if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.method = check_method(method)
        self.num_iters = check_num_iters(num_iters)
        factory = {"device": device, "dtype": dtype}
        if self.affine:
            self.weight = nn.Parameter(torch.empty(self.num_features, **factory))
            self.bias = nn.Parameter(torch.empty(self.num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            g, d = self.num_groups, self.group_size
            self.register_buffer("running_mean", torch.zeros(self.num_features, **factory))
            self._register_running_buffers(g, d, factory)
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self._register_running_buffers(None, None, None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    # -- BatchNorm-like interface ------------------------------------------------------

    def reset_running_stats(self) -> None:
        """Reset the running statistics to those of white, uncorrelated data."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self._reset_running_buffers()
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, and the affine weight to 1 and bias to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_groups={self.num_groups}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, method={self.method!r}, "
            f"num_iters={self.num_iters}"
        )

    # -- forward -----------------------------------------------------------------------

    def _check_input(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"input must have a floating dtype, got {x.dtype}")
        if x.dim() < 2:
            raise ValueError(
                f"expected input of shape (N, C, *) with at least 2 dimensions, "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} channels (dimension 1), "
                f"got shape {tuple(x.shape)}"
            )

    def _exponential_average_factor(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 1.0 / float(self.num_batches_tracked)  # cumulative moving average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        use_batch_stats = self.training or not self.track_running_stats
        n = x.shape[0]
        length = math.prod(x.shape[2:])
        if use_batch_stats and not self._synchronised and n * length == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size "
                f"{tuple(x.shape)}"
            )
        # Statistics and eig in float32 even under autocast (float64 stays float64);
        # the output dtype is the input's, as with BatchNorm.
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            g, d = self.num_groups, self.group_size
            xg = x.to(compute).reshape(n, g, d, length)
            if use_batch_stats:
                group = self._active_group()
                centred, mean, cov, _ = GroupMoments.apply(xg, group)
                matrix, extra_stats = self._matrix(cov)
                if self.training and self.track_running_stats:
                    self._update_running_stats(mean, extra_stats)
                matrix, bias = self._affine(matrix, compute)
                y = GroupAffine.apply(centred, matrix, bias)
            else:
                matrix = self._running_matrix(compute)
                matrix, bias = self._affine(matrix, compute)
                mean = self.running_mean.to(compute).reshape(g, d)
                bias = bias - (matrix @ mean[:, :, None])[:, :, 0]
                y = GroupAffine.apply(xg, matrix, bias)
        return y.reshape(x.shape).to(x.dtype)

    def _active_group(self):
        """The process group to all-reduce the statistics over (None: this process only)."""
        return None

    def _config(self) -> dict:
        """Constructor arguments that rebuild this layer (for convert_sync_whitening)."""
        return {
            "num_features": self.num_features,
            "num_groups": self.num_groups,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "method": self.method,
            "num_iters": self.num_iters,
        }

    def _affine(self, matrix, compute):
        g, d = self.num_groups, self.group_size
        if not self.affine:
            return matrix, torch.zeros(g, d, dtype=compute, device=matrix.device)
        weight = self.weight.to(compute).reshape(g, d, 1)
        return weight * matrix, self.bias.to(compute).reshape(g, d)

    @torch.no_grad()
    def _update_running_stats(self, mean, extra_stats):
        self.num_batches_tracked.add_(1)
        factor = self._exponential_average_factor()
        self.running_mean.lerp_(mean.reshape(-1).to(self.running_mean.dtype), factor)
        for name, value in extra_stats.items():
            buffer = getattr(self, name)
            buffer.lerp_(value.to(buffer.dtype), factor)

    def _spectral(self, cov, spectral):
        """``spectral`` of ``cov + eps·I``, one autograd node with the core's VJP."""
        # The finiteness check reads the small (G, d, d) covariance, not the
        # activations: one host synchronisation per step (skipped while
        # torch.compile traces and under torch.func transforms). Without it a
        # NaN input would surface as an eigensolver convergence error on the
        # CPU, or as a NaN output on a GPU.
        if _can_read_values() and not bool(torch.isfinite(cov).all()):
            raise ValueError(
                f"{type(self).__name__}: the batch covariance has NaN or infinite entries; "
                "the input (or a gradient step before it) is not finite"
            )
        eye = torch.eye(self.group_size, dtype=cov.dtype, device=cov.device)
        return spectral_map(cov + self.eps * eye, spectral, check_finite=False)


class ZCAWhitening(_GroupedEigenNorm):
    r"""Grouped ZCA whitening with the SVD-PI gradient: a drop-in for a BatchNorm layer.

    In training, per group of ``d = num_features / num_groups`` channels,
    the input is centred per channel, its covariance
    ``Σ = x̃ x̃ᵀ / M + eps·I`` (``M = N · ∏ spatial`` samples) is
    eigendecomposed with :func:`svdpi.torch.eig`, and the output is
    ``weight ⊙ (W x̃) + bias`` with ``W = V diag(λ^{-1/2}) Vᵀ``: each group of
    the output has identity covariance before the affine map (up to ``eps``).
    All groups go through one batched eigendecomposition. In evaluation,
    ``running_mean`` and ``running_whitening`` replace the batch statistics.

    Parameters
    ----------
    num_features : int
        ``C``, the number of channels of an input ``(N, C, *)``.
    num_groups : int, default 1
        Number of groups whitened independently; must divide ``num_features``.
    eps : float, default 1e-4
        Added to the diagonal of the covariance.
    momentum : float or None, default 0.1
        Weight of the batch statistics in the running averages (like
        BatchNorm); ``None`` for a cumulative average.
    affine : bool, default True
        Learn a per-channel ``weight`` (initialised to 1) and ``bias`` (0).
    track_running_stats : bool, default True
        Keep running statistics for evaluation; if False, evaluation uses
        the statistics of the batch too.
    method : {"pi", "taylor", "analytic"}, default "pi"
        Gradient of the eigendecomposition, see :func:`svdpi.eig_vjp`.
    num_iters : int, default 19
        Power-iteration steps of the gradient (the paper's 19).
    min_eigenvalue : float, optional
        Leave out of ``W`` the eigenpairs with ``λ <= min_eigenvalue``, where
        ``λ`` includes ``eps`` (the paper's rule is ``min_eigenvalue=eps``).
        Default: keep all.
    max_energy : float, optional
        Keep only the leading eigenpairs holding this fraction of ``Σ λ``,
        with ``energy_rule`` as in :func:`svdpi.truncation_mask`.
        Default: keep all.
    energy_rule : {"preceding", "inclusive"}, default "preceding"
        ``"inclusive"`` is the rule of the paper's published code, which
        always drops the smallest eigenpair of every group.
    device, dtype : optional
        Of the parameters and buffers.

    Attributes
    ----------
    running_mean : torch.Tensor, shape (C,)
    running_whitening : torch.Tensor, shape (num_groups, d, d)
        Running average of the whitening matrices ``W`` (identity initially).
    num_batches_tracked : torch.Tensor
        Number of training batches seen.

    Notes
    -----
    The backward pass is the paper's: the gradient of power iteration with
    deflation, in closed form, finite when two eigenvalues of a group's
    covariance are equal. It is :func:`svdpi.zca_whitening_matrix_vjp`, the
    function NumPy and CuPy users call, so every library gets the same
    gradient (eigenvalues below the core's floor are held constant there). Under ``torch.autocast``
    the statistics, the eigendecomposition and the products run in float32
    (float64 inputs stay float64); the output has the input's dtype, as a
    BatchNorm's. Truncated eigenpairs are chosen in each training step, and
    no gradient flows through that choice.

    Cost: besides one batched eigendecomposition of ``(G, d, d)`` matrices,
    a training step makes two reductions, one centring pass and two batched
    products over the activations forward, and three products, two
    reductions and one addition backward (custom autograd Functions, so
    autograd adds no extra passes); see ``benchmarks/bench_zca_layer.py``.
    The centred input is kept for the backward pass (one activation-sized
    buffer, as BatchNorm keeps its input). A step reads the ``(G, d, d)``
    covariance on the host once, to raise a ``ValueError`` if it is not
    finite. ``torch.compile`` traces the layer without a graph break.
    Double backward is not supported (see :func:`svdpi.torch.eig`).

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> layer = svdpi.torch.ZCAWhitening(8, num_groups=2)
    >>> layer.running_whitening.shape
    torch.Size([2, 4, 4])
    >>> x = torch.randn(64, 8, 5, 5) @ torch.randn(5, 5)
    >>> y = layer(x)
    >>> y.shape
    torch.Size([64, 8, 5, 5])
    >>> group = y[:, :4].transpose(0, 1).reshape(4, -1)  # first group, (d, M)
    >>> torch.allclose(group @ group.T / group.shape[1], torch.eye(4), atol=1e-3)
    True
    >>> y.sum().backward()  # the SVD-PI gradient
    >>> layer.weight.grad.shape
    torch.Size([8])
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int = 1,
        eps: float = 1e-4,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        method: str = "pi",
        num_iters: int = 19,
        *,
        min_eigenvalue: float | None = None,
        max_energy: float | None = None,
        energy_rule: str = "preceding",
        device=None,
        dtype=None,
    ):
        if energy_rule not in ENERGY_RULES:
            raise ValueError(
                f"energy_rule must be 'preceding' or 'inclusive', got {energy_rule!r}"
            )
        if max_energy is not None and not 0.0 < float(max_energy) <= 1.0:
            raise ValueError(f"max_energy must be in (0, 1], got {max_energy!r}")
        self.min_eigenvalue = None if min_eigenvalue is None else float(min_eigenvalue)
        self.max_energy = None if max_energy is None else float(max_energy)
        self.energy_rule = energy_rule
        super().__init__(
            num_features,
            num_groups,
            eps,
            momentum,
            affine,
            track_running_stats,
            method,
            num_iters,
            device,
            dtype,
        )

    def _config(self) -> dict:
        return {
            **super()._config(),
            "min_eigenvalue": self.min_eigenvalue,
            "max_energy": self.max_energy,
            "energy_rule": self.energy_rule,
        }

    def _register_running_buffers(self, g, d, factory):
        if g is None:
            self.register_buffer("running_whitening", None)
        else:
            self.register_buffer("running_whitening", torch.empty(g, d, d, **factory))

    def _reset_running_buffers(self):
        self.running_whitening.copy_(torch.eye(self.group_size).expand_as(self.running_whitening))

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.min_eigenvalue is not None:
            text += f", min_eigenvalue={self.min_eigenvalue}"
        if self.max_energy is not None:
            text += f", max_energy={self.max_energy}, energy_rule={self.energy_rule!r}"
        return text

    def _matrix(self, cov):
        spectral = _Whitening(
            self.method, self.num_iters, self.min_eigenvalue, self.max_energy, self.energy_rule
        )
        whitening = self._spectral(cov, spectral)
        return whitening, {"running_whitening": whitening.detach()}

    def _running_matrix(self, compute):
        return self.running_whitening.to(compute)


class PCADenoising(_GroupedEigenNorm):
    r"""PCA denoising: standardise, then project on the leading principal directions.

    The paper's PCA layer. In training, per group of ``d`` channels, the
    input is standardised per channel, ``x̂ = (x − μ) / sqrt(σ² + eps)``, and
    projected on the ``n_components`` leading eigenvectors of its
    correlation ``R = x̂ x̂ᵀ / M + eps·I``: ``y = weight ⊙ (V_k V_kᵀ x̂) + bias``,
    the gradient of the projector being :func:`svdpi.pca_projector_vjp`
    (SVD-PI; the discarded eigenpairs still enter through the deflation, as
    in the paper). In evaluation, ``running_mean``, ``running_var`` and
    ``running_projector`` replace the batch statistics.

    Parameters
    ----------
    num_features : int
        ``C``, the number of channels of an input ``(N, C, *)``.
    n_components : int, default 16
        Eigenvectors kept per group, ``1 <= n_components <= d`` (16 in the paper).
    eps : float, default 1e-4
        Added to the variances and to the diagonal of the correlation.
    momentum : float or None, default 0.1
        As in :class:`ZCAWhitening`.
    affine : bool, default True
        Learn a per-channel ``weight`` (1) and ``bias`` (0).
    num_groups : int, default 1
        Number of channel groups, each with its own projector.
    track_running_stats : bool, default True
        As in :class:`ZCAWhitening`.
    method : {"pi", "taylor", "analytic"}, default "pi"
        Gradient of the eigendecomposition, see :func:`svdpi.eig_vjp`.
    num_iters : int, default 19
        Power-iteration steps of the gradient.
    device, dtype : optional
        Of the parameters and buffers.

    Attributes
    ----------
    running_mean, running_var : torch.Tensor, shape (C,)
        Running per-channel mean and (biased) variance.
    running_projector : torch.Tensor, shape (num_groups, d, d)
        Running average of the projectors ``V_k V_kᵀ`` (identity initially).

    Notes
    -----
    The variance is the biased one (divided by ``M``), the diagonal of the
    same covariance the correlation is computed from.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> layer = svdpi.torch.PCADenoising(32, n_components=4)
    >>> x = torch.randn(16, 32, 6, 6)
    >>> y = layer(x)
    >>> int(torch.linalg.matrix_rank(y.transpose(0, 1).reshape(32, -1)))
    4
    """

    def __init__(
        self,
        num_features: int,
        n_components: int = 16,
        eps: float = 1e-4,
        momentum: float | None = 0.1,
        affine: bool = True,
        num_groups: int = 1,
        track_running_stats: bool = True,
        method: str = "pi",
        num_iters: int = 19,
        *,
        device=None,
        dtype=None,
    ):
        self.n_components = _positive_int(n_components, "n_components")
        super().__init__(
            num_features,
            num_groups,
            eps,
            momentum,
            affine,
            track_running_stats,
            method,
            num_iters,
            device,
            dtype,
        )
        if self.n_components > self.group_size:
            raise ValueError(
                f"n_components ({self.n_components}) must be at most the group size "
                f"num_features / num_groups = {self.group_size}"
            )

    def _config(self) -> dict:
        return {**super()._config(), "n_components": self.n_components}

    def _register_running_buffers(self, g, d, factory):
        if g is None:
            self.register_buffer("running_var", None)
            self.register_buffer("running_projector", None)
        else:
            self.register_buffer("running_var", torch.empty(g * d, **factory))
            self.register_buffer("running_projector", torch.empty(g, d, d, **factory))

    def _reset_running_buffers(self):
        self.running_var.fill_(1.0)
        self.running_projector.copy_(torch.eye(self.group_size).expand_as(self.running_projector))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_components={self.n_components}"

    def _matrix(self, cov):
        variance = torch.diagonal(cov, dim1=-2, dim2=-1)
        inv_std = torch.rsqrt(variance + self.eps)
        correlation = cov * inv_std[:, :, None] * inv_std[:, None, :]
        spectral = _Projector(self.method, self.num_iters, self.n_components)
        projector = self._spectral(correlation, spectral)
        stats = {
            "running_var": variance.detach().reshape(-1),
            "running_projector": projector.detach(),
        }
        return projector * inv_std[:, None, :], stats

    def _running_matrix(self, compute):
        inv_std = torch.rsqrt(self.running_var.to(compute) + self.eps)
        inv_std = inv_std.reshape(self.num_groups, 1, self.group_size)
        return self.running_projector.to(compute) * inv_std
