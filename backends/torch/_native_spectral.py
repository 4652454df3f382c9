"""The exact VJP of a spectral map in direct torch operations: the backward pass of sqrtm & co.

:func:`exact_vjp` is :func:`svdpi.spectral_map_vjp` with ``method="exact"``
and no mask, written out as direct, mostly in-place torch calls on the same
values in the same order as the core, so the result is the core's bit for
bit (``tests/test_torch_native_spectral.py`` holds it to that on every
domain, at ties, clamped, singular, tiny and huge spectra). The function's
own divided differences (``fn.divided_difference``, ``fn.derivative``) are
called as the core calls them: the formula of each function stays in
:mod:`svdpi.functions`; what is restated here is the core's plumbing around
them (the spectrum in units, the domain's clamp, the floor term, the
Daleckii–Krein sandwich), as :mod:`svdpi.torch._native` restates the
coefficient product.

Why: the core's exact VJP is about twenty passes over ``n × n`` temporaries
and some sixty small operations through array-api-compat's wrappers, plus
its argument checks; with autograd through ``torch.linalg.eigh`` needing
about eight, that overhead made ``sqrtm(method="exact")`` forward + backward
1.15 times eigh autograd at ``(32, 64)`` float32 (target: 1.1). Here the
passes that only serve a domain's clamp are skipped for the domain
``"real"``, the temporaries are overwritten in place, and nothing is
checked twice. Measured (CPU time, one thread, under load): the VJP alone
at ``(32, 64)`` float32 went from 1.9 to 0.7 ms.

It serves plain eager calls that autograd does not record (the backward
pass of :func:`svdpi.torch.spectral_map` and of the functions built on it),
unless ``svdpi.adapter.native_paths(False)`` is in effect, and declines the
rest, which the core computes: masks (the layers'
truncation), powers above 1 (the core sums their overflowing kernel entries
apart, see ``_exact_split``), the exponential where its values or kernel
entries are large (checked on the CPU, where reading one bit costs nothing;
declined on other devices), complex input, anything traced or under a
``torch.func`` transform.
"""

from __future__ import annotations

import math

import array_api_compat.torch as xp_torch

import torch
from svdpi.adapter import native_paths_enabled
from svdpi.functions import Exp, Log, Power, SpectralFunction

from ._native import _plain_eager_untracked


def _homogeneity(fn: SpectralFunction) -> tuple[float, bool] | None:
    """``(value degree, raw values)`` of the core's homogeneous built-ins (``svdpi._spectrum``)."""
    if isinstance(fn, Power):
        return fn.p, False
    if isinstance(fn, Log):
        return 0.0, True
    return None


def _high(dtype: torch.dtype) -> int:
    """The largest exponent less one (the core's cap of a unit's and a factor's exponent)."""
    return -round(math.log2(torch.finfo(dtype).smallest_normal))


def _rescale(x: torch.Tensor, exponent: torch.Tensor, degree: float) -> torch.Tensor:
    """``x · 2^(exponent · degree)`` in place, in the factors of ``svdpi._scaling.rescale``."""
    count = min(3, max(1, math.ceil(abs(degree) - 1e-12)))
    high = _high(exponent.dtype)
    step = exponent * (degree / count)
    step = torch.minimum(
        torch.maximum(step, torch.full_like(step, -high)), torch.full_like(step, high)
    )
    factor = 2.0**step
    for _ in range(count):
        x.mul_(factor)
    return x


def value(
    fn: SpectralFunction, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor
) -> torch.Tensor | None:
    """``svdpi.spectral_map(w, v, fn)`` (no mask), or ``None`` to decline.

    The core's ``apply_function`` where it evaluates ``f`` at the clamped
    eigenvalues themselves (every function but a power above 1 in modulus,
    whose overflowing terms the core sums apart).
    """
    n = eigenvectors.shape[-1]
    scaling = _homogeneity(fn)
    if (
        n == 0
        or eigenvectors.is_complex()
        or (scaling is not None and not scaling[1] and abs(scaling[0]) > 1.0)
        or not native_paths_enabled()
        or not _plain_eager_untracked(eigenvalues, eigenvectors)
    ):
        return None
    clamped = _clamped(fn.domain, eigenvalues, torch.finfo(eigenvalues.dtype), n)
    phi = fn.value(clamped, xp=xp_torch)
    if isinstance(fn, Exp) and not _on_cpu_and(lambda: bool(torch.isfinite(phi).all()), phi):
        # e^λ overflows: the core sums those terms apart (svdpi._spectrum.large_form).
        return None
    return (eigenvectors * phi.unsqueeze(-2)) @ eigenvectors.mT


def _on_cpu_and(check, like: torch.Tensor) -> bool:
    """``check()`` on the CPU, where reading a value costs nothing; False elsewhere (no sync)."""
    return like.device.type == "cpu" and check()


def _clamped(domain, eigenvalues, finfo, n):
    """The eigenvalues after the domain's clamp, without units (``spectrum(units=False)``)."""
    if domain == "positive":
        largest = torch.amax(torch.abs(eigenvalues), dim=-1, keepdim=True)
        relative = largest * (n * finfo.eps)
        absolute = torch.full_like(relative, finfo.smallest_normal)
        return torch.maximum(eigenvalues, torch.maximum(relative, absolute))
    if domain == "nonnegative":
        return torch.maximum(eigenvalues, torch.zeros_like(eigenvalues[..., :1]))
    return eigenvalues


def exact_vjp(
    fn: SpectralFunction,
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor | None:
    """``svdpi.spectral_map_vjp(w, v, fn, grad, method="exact")``, or ``None`` to decline."""
    n = eigenvectors.shape[-1]
    scaling = _homogeneity(fn)
    if (
        n == 0
        or eigenvectors.is_complex()
        or grad.is_complex()
        or (scaling is not None and scaling[0] > 1.0)  # the core's _exact_split
        or not native_paths_enabled()
        or not _plain_eager_untracked(eigenvalues, eigenvectors, grad)
    ):
        return None
    dtype = eigenvalues.dtype
    finfo = torch.finfo(dtype)
    # --- svdpi._spectrum.spectrum (no mask) ---
    largest = torch.amax(torch.abs(eigenvalues), dim=-1, keepdim=True)
    exponent = unit = None
    lam = eigenvalues
    if scaling is not None:
        exponent = torch.floor(torch.log2(largest + finfo.smallest_normal))
        exponent = torch.minimum(exponent, torch.full_like(exponent, _high(dtype)))
        unit = 2.0**exponent
        lam = eigenvalues / unit
        largest = largest / unit
    live = floor_active = None
    domain = fn.domain
    if domain == "positive":
        relative = largest * (n * finfo.eps)
        if exponent is None:
            absolute = torch.full_like(relative, finfo.smallest_normal)
        else:
            absolute = finfo.smallest_normal / unit
        floor, floor_active = torch.maximum(relative, absolute), relative > absolute
        clamped = torch.maximum(lam, floor)
        live = lam >= floor
    elif domain == "nonnegative":
        zero = torch.zeros_like(lam[..., :1])
        clamped = torch.maximum(lam, zero)
        live = lam >= zero
    else:
        clamped = lam
    # Where no eigenvalue is clamped (an SPD matrix under a power or the
    # logarithm) the clamp's factor is exactly 1 and the floor term exactly
    # 0: skipped, with the same result (up to the sign of a zero). Only on the
    # CPU, where reading that one bit costs nothing; on a GPU it would be a
    # synchronisation, so the passes are made there.
    if live is not None and lam.device.type == "cpu" and bool(live.all()):
        live = floor_active = None
    # --- svdpi._spectral_maps.exact_kernel (no mask) ---
    c_i, c_j = clamped.unsqueeze(-1), clamped.unsqueeze(-2)
    kernel = fn.divided_difference(c_i, c_j, xp=xp_torch)
    if isinstance(fn, Exp):
        # Kernel entries above √max: the core sums them apart (its _exact_split).
        bound = math.sqrt(finfo.max)
        if not _on_cpu_and(lambda: bool((torch.abs(kernel) <= bound).all()), kernel):
            return None
    if live is not None:
        # The clamp's factor (c_i − c_j) / (λ_i − λ_j), 1 between live pairs.
        difference = torch.sub(lam.unsqueeze(-1), lam.unsqueeze(-2))
        same = difference == 0
        gap = difference.add_(same)
        across = torch.sub(c_i, c_j).div_(gap)
        across = torch.where(same, live.unsqueeze(-1).to(dtype), across, out=across)
        # A fresh product: fn.divided_difference's result may be shared.
        kernel = torch.mul(kernel.masked_fill(across == 0, 0.0), across)
    # --- svdpi._spectral_maps._floor_term ---
    floor_term = None
    if floor_active is not None:
        magnitude = torch.abs(lam)
        index = torch.arange(n, device=lam.device)
        top = index == torch.argmax(magnitude, dim=-1, keepdim=True)
        below = ~live
        step = torch.full_like(lam, n * finfo.eps)
        zero = torch.zeros_like(step)
        slope = torch.where(lam < 0, zero - step, step)
        ties = torch.sum((magnitude == largest).to(dtype), dim=-1, keepdim=True)
        slope = torch.where(ties > 1, torch.full_like(slope, math.nan), slope)
        moving = top & floor_active & torch.any(below, dim=-1, keepdim=True)
        slope = torch.where(moving, slope, zero)
        weight = torch.where(below, fn.derivative(clamped, xp=xp_torch), zero)
        floor_term = (slope, weight)  # (weight, slope) of the core, transposed: the VJP
    # --- svdpi._spectral_maps._exact_map (transpose) ---
    projected = torch.add(grad, grad.mT).mul_(0.5)
    projected = eigenvectors.mT @ projected @ eigenvectors
    amount = None
    if floor_term is not None:
        weight, slope = floor_term
        diagonal = torch.diagonal(projected, dim1=-2, dim2=-1)
        amount = torch.sum(slope * diagonal, dim=-1, keepdim=True)
    left = eigenvectors @ projected.mul_(kernel)
    if amount is not None:
        left.add_(eigenvectors * (weight * amount).unsqueeze(-2))
    result = left @ eigenvectors.mT
    # --- svdpi._spectral_maps.first_derivative: back from units ---
    if exponent is None:
        return result
    return _rescale(result, exponent.unsqueeze(-1), scaling[0] - 1.0)
