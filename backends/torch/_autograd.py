"""Helpers for torch.autograd.Function subclasses."""

from __future__ import annotations

import inspect

import torch


def cached_signature(cls: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """Class decorator: precompute the signature ``Function.apply`` binds on every call.

    For Functions with a separate ``setup_context``, ``apply`` calls
    ``inspect.signature(cls.forward)`` each time to fill in default arguments;
    ``inspect`` returns a function's ``__signature__`` attribute directly when
    it has one. On small inputs this was about 12% of an eig forward+backward
    on the CPU (profiled, 16 × 4 × 4).
    """
    forward = cls.forward
    forward.__signature__ = inspect.signature(forward)
    return cls
