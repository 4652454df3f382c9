"""The array namespace svdpi.torch hands the core: array-api-compat's, with a lazy ``conj``.

array-api-compat's ``conj`` for torch is ``torch.conj_physical``, which
copies, and which ``torch.func.vmap`` batches through a slow fallback with
a warning. Here it is ``torch.conj`` (a lazy view). The module keeps
array-api-compat's name, so the core still finds svdpi.torch's fast paths
(:mod:`svdpi._dispatch` keys them on the name). Only complex input ever
reaches ``conj`` (the core's ``adjoint`` is a plain transpose for real
arrays): for real input this namespace is array-api-compat's, operation
for operation.
"""

from __future__ import annotations

import types

import array_api_compat.torch as _xp_compat

import torch

xp_torch = types.ModuleType(_xp_compat.__name__)
xp_torch.__dict__.update(vars(_xp_compat))
xp_torch.conj = torch.conj
