"""Which eigenpairs a whitening layer keeps: one validated value and its mask."""

from __future__ import annotations

import dataclasses

from array_api_compat import array_namespace

from ._compat import array_device
from ._typing import Array, Namespace
from ._validation import check_floating, check_real

ENERGY_RULES = ("preceding", "inclusive")


@dataclasses.dataclass(frozen=True)
class Truncation:
    """The truncation rules of the paper's layers, checked once, and the mask they give.

    A frozen (hashable) value: the core, :mod:`svdpi.torch` and
    :mod:`svdpi.jax` take their truncation options through it, so every
    entry point accepts and refuses the same options with the same errors,
    and a ``jax.jit`` static argument or a ``torch.compile`` constant can
    hold it.

    Parameters
    ----------
    min_eigenvalue : float, optional
        Keep only eigenpairs with ``λ_j > min_eigenvalue`` (the paper uses
        its ``eps``, the value added to the covariance's diagonal); a finite
        real number.
    max_energy : float, optional
        Keep the leading eigenpairs until they hold this fraction of the
        total energy ``Σ λ`` (the paper uses ``1 − eps``); in ``(0, 1]``.
    energy_rule : {"preceding", "inclusive"}, default "preceding"
        ``"preceding"`` keeps eigenpair ``j`` while the energy of the pairs
        *before* it is below ``max_energy``, so the pair that crosses the
        threshold is kept and a full-rank spectrum keeps everything.
        ``"inclusive"`` compares the energy up to and *including* ``j``: the
        rule of the paper's published code, which always drops the smallest
        eigenpair of a spectrum (its cumulative energy reaches 1 there).

    Raises
    ------
    TypeError
        For an option that is not a real number (a string, an array, a bool).
    ValueError
        For NaN or an infinity, ``max_energy`` outside ``(0, 1]`` or an
        unknown ``energy_rule``. The messages are those of the layers'
        options (:class:`svdpi.torch.ZCAWhitening` takes the same ones).

    Notes
    -----
    The energy rule never drops the **leading** eigenpair. With
    ``"inclusive"`` and a spectrum whose top eigenpair alone holds more than
    ``max_energy`` of the energy (a rank-one group, e.g. two channels that
    are copies of each other), the literal rule would drop every pair, and a
    whitening layer would output zeros, a group with no signal and no
    gradient. The threshold exists to drop the tail of the spectrum; the
    pair with the largest share of the energy is not part of any tail, so
    svdpi keeps it (the ``"preceding"`` rule keeps it anyway). The same holds
    for a spectrum with no positive energy (the zero matrix). ``min_eigenvalue``
    is an absolute threshold and may drop every pair.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> rules = svdpi.Truncation(min_eigenvalue=1e-5, max_energy=0.9)
    >>> rules.mask(np.array([6.0, 3.0, 1.0, 0.0]))  # energies before each: 0, 0.6, 0.9, 1
    array([ True,  True, False, False])
    >>> svdpi.Truncation(max_energy=0.5, energy_rule="inclusive").mask(np.array([9.0, 1.0]))
    array([ True, False])
    >>> svdpi.Truncation(max_energy=float("nan"))
    Traceback (most recent call last):
        ...
    ValueError: max_energy must be a finite number > 0 and <= 1, got nan
    """

    min_eigenvalue: float | None = None
    max_energy: float | None = None
    energy_rule: str = "preceding"

    def __post_init__(self) -> None:
        minimum = check_real(self.min_eigenvalue, "min_eigenvalue", allow_none=True)
        energy = check_real(
            self.max_energy,
            "max_energy",
            minimum=0.0,
            strict_minimum=True,
            maximum=1.0,
            allow_none=True,
        )
        if not isinstance(self.energy_rule, str) or self.energy_rule not in ENERGY_RULES:
            raise ValueError(
                f"energy_rule must be 'preceding' or 'inclusive', got {self.energy_rule!r}"
            )
        object.__setattr__(self, "min_eigenvalue", minimum)
        object.__setattr__(self, "max_energy", energy)

    @property
    def truncates(self) -> bool:
        """Whether any rule is set (``False``: :meth:`mask` keeps every pair)."""
        return self.min_eigenvalue is not None or self.max_energy is not None

    def mask(self, eigenvalues: Array, /, *, xp: Namespace | None = None) -> Array:
        """Which eigenpairs to keep: a boolean array shaped like ``eigenvalues``.

        Parameters
        ----------
        eigenvalues : array, shape (..., n)
            Descending eigenvalues, as returned by :func:`svdpi.eig`, at
            least one-dimensional.
        xp : array namespace, optional
            Inferred from ``eigenvalues`` when omitted.

        Returns
        -------
        array of bool, shape (..., n)
            ``True`` for the eigenpairs to keep; all ``True`` if no rule is set.

        Examples
        --------
        >>> import numpy as np
        >>> import svdpi
        >>> svdpi.Truncation(min_eigenvalue=0.5).mask(np.array([[2.0, 1.0, 0.1]]))
        array([[ True,  True, False]])
        """
        if xp is None:
            xp = array_namespace(eigenvalues)
        check_floating(eigenvalues, "eigenvalues", xp)
        shape = tuple(eigenvalues.shape)
        if len(shape) == 0:
            raise ValueError(
                "eigenvalues must have shape (..., n), at least one dimension; got a 0-d array"
            )
        device = array_device(eigenvalues)
        keep = xp.ones(shape, dtype=xp.bool, device=device)
        if self.min_eigenvalue is not None:
            keep = keep & (eigenvalues > self.min_eigenvalue)
        if self.max_energy is not None and shape[-1] > 0:
            cumulative = xp.cumulative_sum(eigenvalues, axis=-1)
            total = cumulative[..., -1:]
            if self.energy_rule == "preceding":
                cumulative = cumulative - eigenvalues
            leading = xp.arange(shape[-1], device=device) == 0
            keep = keep & ((cumulative < self.max_energy * total) | leading)
        return keep
