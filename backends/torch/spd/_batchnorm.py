"""Riemannian batch normalisation of SPD matrices (Brooks et al., NeurIPS 2019)."""

from __future__ import annotations

import torch
from svdpi.adapter import MATRIX_FUNCTION_METHODS, check_integer, check_method, check_real
from torch import nn

from .._matrix_functions import expm, inv_sqrtm
from .._options import check_bool
from ._input import autocast_off, check_matrices, check_values, compute_dtype
from ._riemann import airm_geodesic, karcher_steps


class SPDBatchNorm(nn.Module):
    r"""Riemannian batch normalisation of SPD matrices: centre at the identity, then bias.

    The layer of Brooks, Schwander, Barbaresco, Schneider & Cord,
    *Riemannian batch normalization for SPD neural networks* (NeurIPS 2019).
    In training, the batch's Fréchet (Karcher) mean ``G`` under the
    affine-invariant metric is estimated by ``karcher_steps`` steps of the
    Karcher flow from the arithmetic mean, and every matrix is transported
    from ``G`` to the identity and then to the learned bias ``B``:

    .. math::

        X_i \mapsto B^{1/2} G^{-1/2} X_i G^{-1/2} B^{1/2}.

    The running mean follows the batch means along the geodesic,
    ``R ← R^{1/2} (R^{-1/2} G R^{-1/2})^{momentum} R^{1/2}`` (the
    Riemannian counterpart of BatchNorm's ``lerp``), and replaces ``G`` in
    evaluation. The bias is ``B = exp(log_bias)`` with a free symmetric
    parameter ``log_bias`` (zero, ``B = I``, initially), so any optimiser
    keeps it SPD; ``B^{1/2} = exp(log_bias / 2)`` is one eigendecomposition.

    Parameters
    ----------
    num_features : int
        ``n``, the size of the matrices ``(N, n, n)``.
    momentum : float or None, default 0.1
        Geodesic step of the running mean toward the batch mean; ``None``
        for a cumulative (Karcher-flow-free) running average with step
        ``1 / (batches seen)``.
    affine : bool, default True
        Learn the bias ``B`` (the paper's "biasing"); otherwise ``B = I``.
    track_running_stats : bool, default True
        Keep the running mean for evaluation; if False, evaluation uses the
        batch mean too.
    channels : int, optional
        Normalise ``C`` channels separately: input ``(N, C, n, n)``, one
        mean and bias per channel. Default: input ``(N, n, n)``.
    karcher_steps : int, default 1
        Karcher steps for the batch mean (the paper uses 1; 0 gives the
        arithmetic mean).
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule of the matrix functions (the batch mean is
        differentiated through every Karcher step).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf input (one host read per call).
    check_spd : bool, default True
        Raise ``ValueError`` when an input matrix is not positive definite
        (read with the finiteness check).
    device, dtype : optional
        Of the parameter and buffers.

    Attributes
    ----------
    log_bias : torch.nn.Parameter, shape ([C,] n, n)
        ``log B`` (only its symmetric part is used), when ``affine``.
    running_mean : torch.Tensor, shape ([C,] n, n)
        The running Fréchet mean (the identity initially).
    num_batches_tracked : torch.Tensor
        Training batches seen.

    Notes
    -----
    As ``nn.BatchNorm1d``: ``train()`` / ``eval()``, ``reset_running_stats``,
    ``reset_parameters``, ``state_dict`` (a state dict without
    ``num_batches_tracked`` loads with 0); a batch of one matrix in training
    raises ``ValueError``; an empty batch gives an empty output and counts
    in ``num_batches_tracked``. Half-precision input and ``torch.autocast``
    compute in float32, the output has the input's dtype.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import SPDBatchNorm
    >>> from svdpi.torch.spd import functional as F
    >>> layer = SPDBatchNorm(3, karcher_steps=10, dtype=torch.float64)
    >>> x = torch.randn(32, 3, 10, dtype=torch.float64)
    >>> x = x @ x.mT / 10 + 0.1 * torch.eye(3, dtype=torch.float64)
    >>> y = layer(x)
    >>> torch.allclose(F.karcher_mean(y), torch.eye(3, dtype=torch.float64), atol=1e-6)
    True
    >>> layer.num_batches_tracked
    tensor(1)
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        channels: int | None = None,
        karcher_steps: int = 1,
        method: str = "exact",
        check_finite: bool = True,
        check_spd: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.num_features = check_integer(num_features, "num_features", minimum=1)
        self.momentum = check_real(momentum, "momentum", minimum=0.0, maximum=1.0, allow_none=True)
        self.affine = check_bool(affine, "affine")
        self.track_running_stats = check_bool(track_running_stats, "track_running_stats")
        self.channels = (
            None if channels is None else check_integer(channels, "channels", minimum=1)
        )
        self.karcher_steps = check_integer(karcher_steps, "karcher_steps", minimum=0)
        self.method = check_method(method, MATRIX_FUNCTION_METHODS)
        self.check_finite = check_bool(check_finite, "check_finite")
        self.check_spd = check_bool(check_spd, "check_spd")
        factory = {"device": device, "dtype": dtype}
        n = self.num_features
        shape = (n, n) if self.channels is None else (self.channels, n, n)
        if self.affine:
            self.log_bias = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.register_parameter("log_bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.empty(shape, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    # -- BatchNorm-like interface ------------------------------------------------------

    def reset_running_stats(self) -> None:
        """Reset the running mean to the identity and the batch count to 0."""
        if self.track_running_stats:
            with torch.no_grad():
                eye = torch.eye(self.num_features, device=self.running_mean.device)
                self.running_mean.copy_(eye.expand_as(self.running_mean))
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, and the bias to the identity (``log_bias = 0``)."""
        self.reset_running_stats()
        if self.affine:
            nn.init.zeros_(self.log_bias)

    def extra_repr(self) -> str:
        text = [
            str(self.num_features),
            f"momentum={self.momentum}",
            f"affine={self.affine}",
            f"track_running_stats={self.track_running_stats}",
        ]
        if self.channels is not None:
            text.append(f"channels={self.channels}")
        text += [
            f"karcher_steps={self.karcher_steps}",
            f"method={self.method!r}",
            f"check_finite={self.check_finite}",
            f"check_spd={self.check_spd}",
        ]
        return ", ".join(text)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args):
        # As BatchNorm: a state dict without num_batches_tracked loads with 0.
        key = prefix + "num_batches_tracked"
        if self.track_running_stats and key not in state_dict:
            device = self.num_batches_tracked.device
            state_dict[key] = torch.tensor(0, dtype=torch.long, device=device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

    # -- forward -----------------------------------------------------------------------

    def _check_shape(self, x) -> None:
        n = self.num_features
        check_matrices(x, f"{type(self).__name__} input", size=n)
        if self.channels is None:
            expected, ok = f"(N, {n}, {n})", x.dim() == 3
        else:
            expected = f"(N, {self.channels}, {n}, {n})"
            ok = x.dim() == 4 and x.shape[1] == self.channels
        if not ok:
            raise ValueError(
                f"{type(self).__name__}: expected input of shape {expected}, got shape "
                f"{tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_shape(x)
        use_batch_mean = self.training or not self.track_running_stats
        if x.shape[0] == 0:
            return self._empty_batch(x)
        if use_batch_mean and x.shape[0] == 1:
            raise ValueError(
                f"{type(self).__name__}: expected more than 1 matrix per batch when training "
                f"(the batch mean of one matrix is itself), got input size {tuple(x.shape)}"
            )
        check_values(
            x,
            f"{type(self).__name__} input",
            finite=self.check_finite,
            positive_definite=self.check_spd,
            hint=": apply ReEig first, or add a ridge",
        )
        compute = compute_dtype(x)
        options = {"method": self.method, "check_finite": False}
        with autocast_off(x):
            x_c = x.to(compute)
            if use_batch_mean:
                mean = self._batch_mean(x_c)
                if self.training and self.track_running_stats:
                    self._update_running_mean(mean.detach())
            else:
                mean = self.running_mean.to(compute)
            transport = inv_sqrtm(mean, **options)
            if self.affine:
                log_bias = self.log_bias.to(compute)
                bias_root = expm((log_bias + log_bias.mT) * 0.25, **options)
                transport = bias_root @ transport
            y = transport @ x_c @ transport.mT
            y = (y + y.mT) * 0.5
        return y.to(x.dtype)

    def _batch_mean(self, x: torch.Tensor) -> torch.Tensor:
        count = x.shape[0]
        weights = torch.full((count,), 1.0 / count, dtype=x.dtype, device=x.device)
        weights = weights.reshape((count,) + (1,) * (x.dim() - 1))
        mean = x.mean(0)
        return karcher_steps(x, mean, weights, 0, self.karcher_steps, self.method)

    def _factor(self):
        if self.momentum is not None:
            return self.momentum
        # Cumulative average: step 1 / (batches including this one), a tensor
        # so that nothing is read on the host.
        count = self.num_batches_tracked + 1
        return 1.0 / count.to(self.running_mean.dtype)

    @torch.no_grad()
    def _update_running_mean(self, batch_mean: torch.Tensor) -> None:
        running = self.running_mean.to(batch_mean.dtype)
        factor = self._factor()
        if isinstance(factor, torch.Tensor):
            factor = factor.expand(running.shape[:-2])
        updated = airm_geodesic(
            running, batch_mean, factor, method=self.method, check_finite=False, check_spd=False
        )
        try:
            self.running_mean.copy_(updated)
            self.num_batches_tracked.add_(1)
        except RuntimeError as error:
            raise RuntimeError(
                f"{type(self).__name__}: the running mean cannot be updated in place under "
                "this torch.func transform (vmap over the input while the buffers are not "
                "batched, or jvp/grad of a function that captures them). Put the layer in "
                "eval mode, construct it with track_running_stats=False, or pass the buffers "
                f"in (torch.func.functional_call). Error from PyTorch: {error}"
            ) from error

    def _empty_batch(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm's answer to no samples: an empty output; the batch still counts."""
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
        if not self.affine:
            return x.clone()
        return x + 0 * self.log_bias.to(x.dtype)
