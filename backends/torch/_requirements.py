"""The oldest PyTorch svdpi.torch works with, checked when it is imported.

PyTorch 2.3 is the first release with :func:`torch.compiler.is_compiling`,
which ``svdpi.torch.eig`` and the native coefficient product call on every
call; everything else the adapter uses (``torch.func``, autograd Functions
with ``setup_context`` and ``generate_vmap_rule``, ``torch.aminmax``, ...)
is older. ``tests/test_torch_requirements.py`` lists every ``torch.*`` name
the adapter uses, so that a newer one cannot slip in unnoticed.
"""

from __future__ import annotations

import re

MINIMUM_TORCH = (2, 3)


def check_torch_version(version: str) -> None:
    """Raise ImportError if ``version`` (a ``torch.__version__``) is older than the minimum."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:  # an unusual local build: let it try
        return
    if (int(match[1]), int(match[2])) < MINIMUM_TORCH:
        minimum = ".".join(map(str, MINIMUM_TORCH))
        raise ImportError(
            f"svdpi.torch needs PyTorch >= {minimum} (it calls torch.compiler.is_compiling, "
            f"new in {minimum}); this is PyTorch {version}. Upgrade it, e.g. "
            f"pip install 'torch>={minimum}', or use the core (svdpi.eig, svdpi.eig_vjp) "
            "on NumPy arrays."
        )
