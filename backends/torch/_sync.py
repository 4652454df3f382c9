"""Whitening layers whose statistics span all processes of a distributed job."""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import nn

from ._whitening import PCADenoising, ZCAWhitening, _GroupedEigenNorm, _signature_with


class _Synchronised:
    """Mixin: all-reduce the batch statistics over ``self.process_group``.

    The reductions happen in the layer's statistics kernel
    (``svdpi.torch._kernels.GroupMoments``): per-group sums and the sample
    count in one all-reduce, then the sums of outer products of the centred
    data about the global mean in a second (so the covariance is exactly the
    one of the concatenated batch, whatever each rank's batch size); its
    backward all-reduces the gradients of the mean and covariance in one
    more. Without an initialised process group, or with a single process,
    the layer is the plain one.
    """

    _synchronised = True

    def _active_group(self):
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        if dist.get_world_size(group) == 1:
            return None
        return group


def _synchronised_init(plain: type[_GroupedEigenNorm]):
    """``__init__`` of the Sync twin of ``plain``: its arguments plus ``process_group``."""

    def __init__(self, *args, process_group=None, **config):
        plain.__init__(self, *args, **config)
        self.process_group = process_group

    own = inspect.Parameter("process_group", inspect.Parameter.KEYWORD_ONLY, default=None)
    __init__.__signature__ = _signature_with(plain.__init__, [own])
    return __init__


class SyncZCAWhitening(_Synchronised, ZCAWhitening):
    """:class:`ZCAWhitening` with the batch statistics of all processes (like ``SyncBatchNorm``).

    Every rank whitens its part of the batch with the mean and covariance of
    the global batch, so the outputs, the running statistics and the
    gradients are those of one process on the concatenated batch (input
    gradients per rank; parameter gradients summed over ranks, which is what
    ``DistributedDataParallel`` averages). Ranks may hold different batch
    sizes.

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats
        As in :class:`ZCAWhitening`.
    num_groups, method, num_iters, check_finite, min_eigenvalue, max_energy, energy_rule
        As in :class:`ZCAWhitening` (keyword-only).
    process_group : torch.distributed.ProcessGroup, optional
        The processes to synchronise; the default group when omitted.
        Keyword-only.
    device, dtype : optional
        Of the parameters and buffers.

    Notes
    -----
    Call ``torch.distributed.destroy_process_group()`` before the program
    exits, as PyTorch asks: a gloo group left to be destroyed during
    interpreter shutdown can abort the process with "terminate called
    without an active exception" (SIGABRT) after all the work is done. The
    layer's autograd graphs hold the process group only weakly, so outputs
    still alive do not delay its destruction (svdpi 0.1 held it strongly,
    which made that abort happen under ``torchrun`` in about a third of the
    runs); a backward pass after the group was destroyed raises
    ``RuntimeError``. Forward-mode AD (``torch.autograd.forward_ad``)
    all-reduces the tangents of the statistics as the statistics; the
    ``torch.func`` transforms (``vmap``, ``grad``, ``jvp``) of a layer
    synchronised over several processes raise ``NotImplementedError``
    (without a process group the layer is the plain one and supports them).

    Examples
    --------
    Without an initialised process group it computes what :class:`ZCAWhitening` does:

    >>> import torch
    >>> import svdpi.torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> sync = svdpi.torch.SyncZCAWhitening(8, num_groups=2)
    >>> plain = svdpi.torch.ZCAWhitening(8, num_groups=2)
    >>> x = torch.randn(32, 8, 4, 4)
    >>> torch.equal(sync(x), plain(x))
    True
    """

    __init__ = _synchronised_init(ZCAWhitening)


class SyncPCADenoising(_Synchronised, PCADenoising):
    """:class:`PCADenoising` with the batch statistics of all processes.

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats
        As in :class:`PCADenoising`.
    n_components, num_groups, method, num_iters, check_finite
        As in :class:`PCADenoising` (keyword-only; ``n_components`` is required).
    process_group : torch.distributed.ProcessGroup, optional
        The processes to synchronise; the default group when omitted.
    device, dtype : optional
        Of the parameters and buffers.

    Examples
    --------
    >>> import svdpi.torch
    >>> svdpi.torch.SyncPCADenoising(32, n_components=8).running_projector.shape
    torch.Size([1, 32, 32])
    """

    __init__ = _synchronised_init(PCADenoising)


_SYNC_CLASSES = ((ZCAWhitening, SyncZCAWhitening), (PCADenoising, SyncPCADenoising))


def convert_sync_whitening(module: nn.Module, process_group=None) -> nn.Module:
    """Replace the ZCAWhitening / PCADenoising layers in ``module`` by their Sync versions.

    Like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``: the new layers
    share the parameters and buffers of the old ones (the same tensors) and
    keep their training mode. Layers already synchronised are left alone.

    Parameters
    ----------
    module : torch.nn.Module
        A layer or a network containing whitening layers.
    process_group : torch.distributed.ProcessGroup, optional
        Given to each new layer; the default group when omitted.

    Returns
    -------
    torch.nn.Module
        ``module`` with its whitening layers replaced (a new object if
        ``module`` itself is one).

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> zca = svdpi.torch.ZCAWhitening(16, num_groups=4)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), zca)
    >>> net = svdpi.torch.convert_sync_whitening(net)
    >>> type(net[1]).__name__
    'SyncZCAWhitening'
    """
    converted = module
    if isinstance(module, _GroupedEigenNorm) and not isinstance(module, _Synchronised):
        for plain, sync in _SYNC_CLASSES:
            if isinstance(module, plain):
                converted = _convert(module, sync, process_group)
                break
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_whitening(child, process_group))
    return converted


def _convert(module, sync_class, process_group):
    reference = module.weight if module.affine else module.running_mean
    factory = {}
    if reference is not None:
        factory = {"device": reference.device, "dtype": reference.dtype}
    converted = sync_class(**module._config(), process_group=process_group, **factory)
    with torch.no_grad():
        for name, parameter in module.named_parameters(recurse=False):
            setattr(converted, name, parameter)
        for name, buffer in module.named_buffers(recurse=False):
            setattr(converted, name, buffer)
    converted.train(module.training)
    if hasattr(module, "qconfig"):
        converted.qconfig = module.qconfig
    return converted
