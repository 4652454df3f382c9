"""The paper's layers: grouped ZCA whitening and PCA denoising, BatchNorm-style modules."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math

import torch
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    Truncation,
    check_integer,
    check_method,
    check_num_iters,
    check_real,
)
from svdpi.functions import Power
from torch import nn

from ._eig import _can_read_values
from ._kernels import GroupAffine, GroupAffineReverse, GroupMoments, GroupMomentsReverse
from ._options import check_bool
from ._spectral import Leading, apply, make_map

#: The whitening matrix is the spectral map of λ^{-1/2} (truncated by the layer's rules).
_WHITENING = Power(-0.5)
#: The projector is the spectral map of the constant 1 on the leading eigenpairs.
_INDICATOR = Power(0.0)


def _whitening_map(method, num_iters, truncation, caller="ZCAWhitening"):
    """The ZCA layer's node: ``λ^{-1/2}`` on the eigenpairs ``truncation`` keeps."""
    rule = truncation if truncation.truncates else None
    return make_map(_WHITENING, method, num_iters, rule=rule, caller=caller)


def _projector_map(method, num_iters, n_components, caller="PCADenoising"):
    """The PCA layer's node: the projector on the ``n_components`` leading eigenvectors."""
    return make_map(_INDICATOR, method, num_iters, rule=Leading(n_components), caller=caller)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format an output like ``x`` should have (as BatchNorm's)."""
    if x.is_contiguous():
        return torch.contiguous_format
    channels_last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if channels_last is None:
        return torch.contiguous_format
    try:
        is_channels_last = x.is_contiguous(memory_format=channels_last)
    except RuntimeError:
        # vmap cannot query it ("NYI"): a batched example has no layout of its own.
        return torch.contiguous_format
    return channels_last if is_channels_last else torch.contiguous_format


def _positive_int(value, name: str) -> int:
    return check_integer(value, name, minimum=1)


class _NonFiniteStatistics(ValueError):
    """The matrix given to the eigensolver is not finite (the layer's forward says why)."""


# Constructor parameters that are not part of a layer's configuration.
_NOT_CONFIGURATION = frozenset({"self", "device", "dtype", "process_group"})


def _signature_with(base_init, own: list[inspect.Parameter]) -> inspect.Signature:
    """``base_init``'s signature with the keyword-only parameters ``own`` added.

    Required ones (``PCADenoising``'s ``n_components``) come first among the
    keyword-only parameters, where a reader looks for what must be given;
    optional ones go before ``device``.
    """
    base = list(inspect.signature(base_init).parameters.values())
    names = [p.name for p in base]
    first = next(
        (i for i, p in enumerate(base) if p.kind is inspect.Parameter.KEYWORD_ONLY), len(base)
    )
    cut = names.index("device")
    required = [p for p in own if p.default is inspect.Parameter.empty]
    optional = [p for p in own if p.default is not inspect.Parameter.empty]
    return inspect.Signature(base[:first] + required + base[first:cut] + optional + base[cut:])


def _adds_options(base_init):
    """Decorator: ``__init__(self, *args, <own options>, **config)`` gets the full signature.

    The signature is ``base_init``'s with the decorated function's own
    keyword-only parameters inserted before ``device``: what ``help()``,
    ``inspect.signature`` and the docs show, and what :meth:`_config` reads.
    """

    def decorate(init):
        own = inspect.signature(init).parameters.values()
        keyword_only = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
        init.__signature__ = _signature_with(base_init, keyword_only)
        return init

    return decorate


class _GroupedEigenNorm(nn.Module):
    """What the whitening layers share: groups, buffers, statistics, input checks.

    A subclass defines ``_matrix(cov)``, the ``(G, d, d)`` map applied to the
    centred input in training (differentiable), and how its running
    statistics are kept. Its ``__init__`` takes the base's arguments through
    ``*args, **config`` plus keyword-only options of its own, stored as
    attributes of the same name, and is decorated with :func:`_adds_options`
    so that its signature (help, docs, :meth:`_config`) lists all of them.
    """

    # True in the synchronised subclasses (their statistics span a process group).
    _synchronised = False
    # 2: svdpi 0.2 (see _load_from_state_dict); modules saved by 0.1 carry version 1.
    _version = 2

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-4,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        num_groups: int = 1,
        method: str = "pi",
        num_iters: int = 19,
        check_finite: bool = True,
        device=None,
        dtype=None,
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
        if isinstance(eps, int) and not isinstance(eps, bool) and eps >= 1:
            # svdpi 0.1's second positional parameter was num_groups
            # (PCADenoising's, n_components): refuse rather than whiten with eps = 4.
            parameters = inspect.signature(type(self).__init__).parameters
            meant = "n_components" if "n_components" in parameters else "num_groups"
            raise TypeError(
                f"eps={eps!r} is an integer: since svdpi 0.2 the positional parameters are "
                "BatchNorm's (num_features, eps, momentum, affine, track_running_stats) and "
                "num_groups / n_components are keyword-only, e.g. "
                f"{type(self).__name__}({num_features}, {meant}={eps})"
            )
        self.eps = check_real(eps, "eps", minimum=0.0)
        self.momentum = check_real(momentum, "momentum", minimum=0.0, maximum=1.0, allow_none=True)
        self.affine = check_bool(affine, "affine")
        self.track_running_stats = check_bool(track_running_stats, "track_running_stats")
        self.method = check_method(method, MATRIX_FUNCTION_METHODS)
        self.num_iters = check_num_iters(num_iters)
        self.check_finite = check_bool(check_finite, "check_finite")
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

    def _config(self) -> dict:
        """Constructor arguments that rebuild this layer (for convert_sync_whitening)."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name not in _NOT_CONFIGURATION}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args):
        # As BatchNorm: a missing num_batches_tracked (a state dict written by
        # hand, or converted from a layer without one) loads as 0 rather than
        # failing a strict load. svdpi 0.1 (version 1) wrote the same keys and
        # shapes as 0.2, so its checkpoints need no other conversion; a later
        # format change converts from local_metadata["version"] here.
        key = prefix + "num_batches_tracked"
        if self.track_running_stats and key not in state_dict:
            device = self.num_batches_tracked.device
            state_dict[key] = torch.tensor(0, dtype=torch.long, device=device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

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
        config = self._config()
        text = str(config.pop("num_features"))
        return ", ".join([text, *(f"{name}={value!r}" for name, value in config.items())])

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

    def _exponential_average_factor(self):
        if self.momentum is not None:
            return self.momentum
        # A cumulative moving average, 1 / (batches including this one), as a
        # tensor: no host read of the count (a GPU synchronisation, and an
        # error under vmap over an ensemble, where each member has its own).
        count = self.num_batches_tracked + 1
        return 1.0 / count.to(self.running_mean.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        use_batch_stats = self.training or not self.track_running_stats
        n = x.shape[0]
        length = math.prod(x.shape[2:])
        group = self._active_group() if use_batch_stats else None
        if group is not None and torch._C._are_functorch_transforms_active():
            raise NotImplementedError(
                f"{type(self).__name__}: torch.func transforms (vmap, grad, jvp, ...) of a "
                "layer synchronised over several processes are not supported; use "
                "backward() or torch.autograd.forward_ad, or the plain layer"
            )
        if use_batch_stats and group is None and n * length <= 1:
            if n * length == 0:
                return self._empty_batch(x)
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size "
                f"{tuple(x.shape)}"
            )
        # Statistics and eig in float32 even under autocast (float64 stays float64);
        # the output dtype is the input's, as with BatchNorm. (The meta device
        # has no autocast: torch.autocast raises there.)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        autocast = (
            contextlib.nullcontext()
            if x.device.type == "meta"
            else torch.autocast(device_type=x.device.type, enabled=False)
        )
        # Dynamo cannot trace a Function that defines forward mode: while
        # compiling, the variants without jvp (as svdpi.torch.eig does).
        if torch.compiler.is_compiling():
            moments, affine = GroupMomentsReverse, GroupAffineReverse
        else:
            moments, affine = GroupMoments, GroupAffine
        with autocast:
            g, d = self.num_groups, self.group_size
            xg = x.to(compute).reshape(n, g, d, length)
            if use_batch_stats:
                centred, mean, cov, _ = moments.apply(xg, group)
                try:
                    matrix, extra_stats = self._matrix(cov)
                except _NonFiniteStatistics:
                    raise ValueError(self._non_finite_message(x, cov)) from None
                if self.training and self.track_running_stats:
                    self._update_running_stats(mean, extra_stats)
                matrix, bias = self._affine(matrix, compute)
                y = affine.apply(centred, matrix, bias)
            else:
                matrix = self._running_matrix(compute)
                matrix, bias = self._affine(matrix, compute)
                mean = self.running_mean.to(compute).reshape(g, d)
                bias = bias - (matrix @ mean[:, :, None])[:, :, 0]
                y = affine.apply(xg, matrix, bias)
        # The kernels work on (N, G, d, L) rows; give the output the input's
        # memory format back (channels_last in, channels_last out, as BatchNorm).
        return y.reshape(x.shape).to(x.dtype, memory_format=_memory_format(x))

    def _empty_batch(self, x):
        """BatchNorm's answer to an input with no samples: an empty output.

        The running statistics stay as they are but the batch counts, as in
        ``nn.BatchNorm2d``; the parameters get zero gradients (not None).
        """
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
        if not self.affine:
            return x.clone()
        shape = (1, self.num_features) + (1,) * (x.dim() - 2)
        return x * self.weight.reshape(shape).to(x.dtype) + self.bias.reshape(shape).to(x.dtype)

    def _active_group(self):
        """The process group to all-reduce the statistics over (None: this process only)."""
        return None

    def _affine(self, matrix, compute):
        g, d = self.num_groups, self.group_size
        if not self.affine:
            return matrix, torch.zeros(g, d, dtype=compute, device=matrix.device)
        weight = self.weight.to(compute).reshape(g, d, 1)
        return weight * matrix, self.bias.to(compute).reshape(g, d)

    @torch.no_grad()
    def _update_running_stats(self, mean, extra_stats):
        factor = self._exponential_average_factor()
        # Detached: no gradient and no forward-mode tangent into the buffers.
        updates = [("running_mean", mean.reshape(-1)), *extra_stats.items()]
        if not torch._C._are_functorch_transforms_active():
            for name, value in updates:
                buffer = getattr(self, name)
                buffer.lerp_(value.detach().to(buffer.dtype), factor)
            self.num_batches_tracked.add_(1)
            return
        try:
            # vmap has a batching rule for lerp, not for lerp_ (its fallback warns).
            for name, value in updates:
                buffer = getattr(self, name)
                buffer.copy_(torch.lerp(buffer, value.detach().to(buffer.dtype), factor))
            self.num_batches_tracked.add_(1)
        except RuntimeError as error:
            # As nn.BatchNorm2d under vmap over the input with unbatched running
            # statistics, or under jvp/grad with the buffers captured, but
            # saying which layer and what to do instead.
            raise RuntimeError(
                f"{type(self).__name__}: the running statistics cannot be updated in place "
                "under this torch.func transform (vmap over the input while the buffers are "
                "not batched, or jvp/grad of a function that captures the buffers). Put the "
                "layer in eval mode, construct it with track_running_stats=False, or pass "
                "the buffers in (an ensemble: torch.func.stack_module_state + "
                "functional_call under vmap); torch.autograd.forward_ad gives forward mode "
                f"in training. Error from PyTorch: {error}"
            ) from error

    def _non_finite_message(self, x, cov) -> str:
        """Why the matrix given to the eigensolver is not finite (read only when it is not)."""
        name = type(self).__name__
        if not bool(torch.isfinite(x).all()):
            return (
                f"{name}: the batch covariance has NaN or infinite entries; the input (or a "
                "gradient step before it) is not finite"
            )
        if not bool(torch.isfinite(cov).all()):
            dtype = str(cov.dtype).removeprefix("torch.")
            largest = float(x.detach().abs().amax())
            hint = (
                "rescale the input"
                if cov.dtype == torch.float64
                else "pass float64 input (x.double()) or rescale the input"
            )
            return (
                f"{name}: the input is finite (largest magnitude {largest:.3g}) but its batch "
                f"covariance, made of products of activations, overflowed {dtype} (largest "
                f"{torch.finfo(cov.dtype).max:.3g}): {hint}"
            )
        return self._non_finite_reason(cov)

    def _non_finite_reason(self, cov) -> str:
        return (
            f"{type(self).__name__}: the matrix given to the eigensolver has NaN or infinite "
            "entries although the input and its covariance are finite"
        )

    def _spectral(self, cov, spectral):
        """``spectral`` of ``cov + eps·I``, one autograd node with the core's VJP."""
        # The finiteness check reads the small (G, d, d) covariance, not the
        # activations: one host synchronisation per step (skipped while
        # torch.compile traces, under torch.func transforms, on the meta
        # device, and with check_finite=False). Without it a NaN input would
        # surface as NaN outputs and running statistics (see the class notes).
        if (
            self.check_finite
            and cov.device.type != "meta"
            and _can_read_values()
            and not bool(torch.isfinite(cov).all())
        ):
            # The forward pass replaces this by a message saying why (reading
            # the input only then, so a finite step still reads one value).
            raise _NonFiniteStatistics(
                f"{type(self).__name__}: the batch covariance has NaN or infinite entries"
            )
        eye = torch.eye(self.group_size, dtype=cov.dtype, device=cov.device)
        return apply(cov + self.eps * eye, spectral, check_finite=False)


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
    eps : float, default 1e-4
        Added to the diagonal of the covariance. An integer ``>= 1`` raises
        ``TypeError``: it is most likely svdpi 0.1's positional ``num_groups``
        (``n_components`` for :class:`PCADenoising`).
    momentum : float or None, default 0.1
        Weight of the batch statistics in the running averages (like
        BatchNorm); ``None`` for a cumulative average.
    affine : bool, default True
        Learn a per-channel ``weight`` (initialised to 1) and ``bias`` (0).
    track_running_stats : bool, default True
        Keep running statistics for evaluation; if False, evaluation uses
        the statistics of the batch too.
    num_groups : int, default 1
        Number of groups whitened independently; must divide ``num_features``.
        This and every parameter below are keyword-only (the first five are
        BatchNorm's, in BatchNorm's order).
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Gradient of the whitening matrix, see
        :func:`svdpi.zca_whitening_matrix_vjp`: through the eigenvectors
        with the coefficients of :func:`svdpi.eig_vjp` (``"pi"``, the
        paper's), or ``"exact"``, the Daleckii–Krein derivative of
        ``Σ^{-1/2}``, which does not depend on the basis an eigensolver
        picks for a repeated eigenvalue.
    num_iters : int, default 19
        Power-iteration steps of the gradient (the paper's 19); ignored by
        ``"analytic"`` and ``"exact"``.
    check_finite : bool, default True
        Raise ``ValueError`` when the batch covariance has NaN or infinite
        entries, at the cost of reading the small ``(G, d, d)`` covariance
        on the host in every training step (a GPU synchronisation). The
        message says whether the input is not finite or a finite input's
        covariance overflowed (float32 products overflow for activations of
        about ``1e19``: use float64 input or rescale). With
        ``False`` a step is fully asynchronous, and a non-finite input is
        not caught: on a GPU the output, the gradients and the running
        statistics become NaN; on the CPU the eigensolver may instead raise
        ``torch.linalg.LinAlgError``. Either way nothing finite-looking
        comes out of a non-finite batch.
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
    gradient (eigenvalues below the core's floor are held constant there).
    Under ``torch.autocast`` the statistics, the eigendecomposition and the
    products run in float32 (float64 inputs stay float64); the output has
    the input's dtype, as a BatchNorm's. Truncated eigenpairs are chosen in
    each training step, and no gradient flows through that choice.

    As ``nn.BatchNorm2d``: a batch with no samples (``N = 0`` or an empty
    spatial size) gives an empty output, leaves the running statistics as
    they are and counts in ``num_batches_tracked``; a ``channels_last``
    input gives a ``channels_last`` output (through one extra copy: the
    kernels work channel-major); the layer runs on the ``meta`` device, for
    shape propagation and deferred initialisation. Checkpoints of svdpi 0.1
    load unchanged (see ``_load_from_state_dict``).

    ``torch.func``, as with ``nn.BatchNorm2d``: ``vmap`` over an ensemble
    (``torch.func.stack_module_state`` + ``functional_call``) in training
    and evaluation, each member updating its own running statistics (also
    with ``momentum=None``, where BatchNorm fails); ``vmap`` over inputs in
    evaluation or without running statistics; ``grad``, ``vjp``, ``jvp``,
    ``jacfwd`` and ``torch.autograd.forward_ad``. Forward mode is the
    transpose of ``method``'s gradient (the derivative itself for
    ``"exact"`` and ``"analytic"``). Where the running statistics cannot be
    updated in place (``vmap`` over the input with unbatched buffers, a
    ``jvp`` of a function that captures them), the layer raises
    ``RuntimeError``, as BatchNorm does. The finiteness check is skipped
    under these transforms.

    Cost: besides one batched eigendecomposition of ``(G, d, d)`` matrices,
    a training step makes two reductions, one centring pass and two batched
    products over the activations forward, and three products, two
    reductions and one addition backward (custom autograd Functions, so
    autograd adds no extra passes); see ``benchmarks/bench_zca_layer.py``.
    The centred input is kept for the backward pass (one activation-sized
    buffer, as BatchNorm keeps its input). Unless ``check_finite=False``, a
    step reads the ``(G, d, d)`` covariance on the host once, to raise a
    ``ValueError`` if it is not finite. ``torch.compile`` traces the layer without a graph break.

    Second derivatives (double backward for a gradient penalty,
    ``torch.func.hessian``): with ``method="exact"``, through
    :func:`svdpi.spectral_map_hvp`; the other methods are differentiable
    once and raise ``RuntimeError`` naming the layer.

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

    @_adds_options(_GroupedEigenNorm.__init__)
    def __init__(
        self,
        *args,
        min_eigenvalue: float | None = None,
        max_energy: float | None = None,
        energy_rule: str = "preceding",
        **config,
    ):
        # One value holds and checks the three options (svdpi.Truncation, the
        # core's): the layer accepts and refuses exactly what the core does.
        self.truncation = Truncation(min_eigenvalue, max_energy, energy_rule)
        super().__init__(*args, **config)

    # The truncation options, read from and written through ``truncation``
    # (so that an assignment is checked as the constructor checks it).
    @property
    def min_eigenvalue(self) -> float | None:
        return self.truncation.min_eigenvalue

    @min_eigenvalue.setter
    def min_eigenvalue(self, value) -> None:
        self.truncation = dataclasses.replace(self.truncation, min_eigenvalue=value)

    @property
    def max_energy(self) -> float | None:
        return self.truncation.max_energy

    @max_energy.setter
    def max_energy(self, value) -> None:
        self.truncation = dataclasses.replace(self.truncation, max_energy=value)

    @property
    def energy_rule(self) -> str:
        return self.truncation.energy_rule

    @energy_rule.setter
    def energy_rule(self, value) -> None:
        self.truncation = dataclasses.replace(self.truncation, energy_rule=value)

    def _register_running_buffers(self, g, d, factory):
        if g is None:
            self.register_buffer("running_whitening", None)
        else:
            self.register_buffer("running_whitening", torch.empty(g, d, d, **factory))

    def _reset_running_buffers(self):
        self.running_whitening.copy_(torch.eye(self.group_size).expand_as(self.running_whitening))

    def _matrix(self, cov):
        spectral = _whitening_map(
            self.method, self.num_iters, self.truncation, type(self).__name__
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
    eps : float, default 1e-4
        Added to the variances and to the diagonal of the correlation.
    momentum, affine, track_running_stats
        As in :class:`ZCAWhitening`.
    n_components : int
        Eigenvectors kept per group, ``1 <= n_components <= d``; required
        and keyword-only, since no default suits every group size (the
        paper keeps 16 of 64). The parameters below are keyword-only too.
    num_groups : int, default 1
        Number of channel groups, each with its own projector.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Gradient of the projector, see :func:`svdpi.pca_projector_vjp`
        (``"exact"`` is finite whenever there is an eigenvalue gap at the cut).
    num_iters, check_finite
        As in :class:`ZCAWhitening`.
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
    same covariance the correlation is computed from. Second derivatives as
    in :class:`ZCAWhitening`: with ``method="exact"`` only.

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

    @_adds_options(_GroupedEigenNorm.__init__)
    def __init__(self, *args, n_components: int, **config):
        self.n_components = _positive_int(n_components, "n_components")
        super().__init__(*args, **config)
        if self.n_components > self.group_size:
            raise ValueError(
                f"n_components ({self.n_components}) must be at most the group size "
                f"num_features / num_groups = {self.group_size}"
            )

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

    def _non_finite_reason(self, cov) -> str:
        variance = torch.diagonal(cov, dim1=-2, dim2=-1).reshape(-1)
        constant = torch.nonzero(variance + self.eps == 0).reshape(-1).tolist()
        if not constant:
            return super()._non_finite_reason(cov)
        more = " ..." if len(constant) > 8 else ""
        return (
            f"{type(self).__name__}: channel(s) {constant[:8]}{more} have zero variance in "
            "this batch and eps=0, so standardising them divides 0 by 0; use eps > 0"
        )

    def _matrix(self, cov):
        variance = torch.diagonal(cov, dim1=-2, dim2=-1)
        inv_std = torch.rsqrt(variance + self.eps)
        correlation = cov * inv_std[:, :, None] * inv_std[:, None, :]
        spectral = _projector_map(
            self.method, self.num_iters, self.n_components, type(self).__name__
        )
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
