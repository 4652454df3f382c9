"""Functions of SPD matrices: the layers' maps, vectorisation, distances, means, geodesics.

The functional counterparts of :mod:`svdpi.torch.spd`'s layers
(:func:`bimap`, :func:`reeig`, :func:`logeig`, :func:`expeig`,
:func:`poweig`), the norm-preserving vectorisation (:func:`vectorize`,
:func:`unvectorize`), and the Riemannian geometry of SPD matrices under the
log-Euclidean and affine-invariant metrics: distances, means, geodesics and
the exponential and logarithm maps. All are built on svdpi's matrix
functions with their exact derivatives (``method="exact"``).
"""

from ._bimap import bimap
from ._eigen import expeig, logeig, poweig, reeig
from ._riemann import (
    airm_distance,
    airm_geodesic,
    exp_map_airm,
    karcher_mean,
    log_euclidean_distance,
    log_euclidean_geodesic,
    log_euclidean_mean,
    log_map_airm,
)
from ._vectorize import unvectorize, vectorize

__all__ = [
    "airm_distance",
    "airm_geodesic",
    "bimap",
    "exp_map_airm",
    "expeig",
    "karcher_mean",
    "log_euclidean_distance",
    "log_euclidean_geodesic",
    "log_euclidean_mean",
    "log_map_airm",
    "logeig",
    "poweig",
    "reeig",
    "unvectorize",
    "vectorize",
]
