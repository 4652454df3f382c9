"""Train a classifier on ZCA-whitened features with CuPy alone, back-propagating by hand.

CuPy has no autograd, so this example writes the backward pass itself, with
svdpi's explicit vector-Jacobian products:

    x ─ W1 ─▶ h ─ per group: centre, covariance Σ = HHᵀ/N + εI, eig(Σ),
              W = V diag(λ^-1/2) Vᵀ, y = W H ─▶ softmax(y W2 + b2) ─▶ cross-entropy

Backward: softmax/linear by hand, then ``svdpi.zca_whitening_matrix_vjp``
(which chains into the SVD-PI gradient of ``svdpi.eig_vjp``), then the
covariance and centring chain rule by hand. The groups are one batched
``svdpi.eig`` call, not a loop. The gradients are checked once against
PyTorch autograd through ``svdpi.torch.eig`` on the same data (zero-copy via
DLPack on the GPU).

The maths is written against the array API (``xp``), so the same script runs
on the CPU with NumPy:

    python examples/cupy_whitening.py                   # CuPy, on the GPU
    python examples/cupy_whitening.py --backend numpy   # NumPy, on the CPU
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device

import svdpi


class BackendUnavailable(RuntimeError):
    """The requested array library cannot run here (e.g. CuPy without a GPU)."""


@dataclass(frozen=True)
class Config:
    n_samples: int = 2048
    n_features: int = 16
    groups: int = 4
    n_classes: int = 4
    eps: float = 1e-3  # added to each group's covariance, as in the paper's layer
    learning_rate: float = 0.5
    steps: int = 150
    seed: int = 0
    method: str = "pi"  # the gradient rule of svdpi.eig_vjp
    num_iters: int = 19


def array_namespace_for(backend: str) -> Any:
    """The array API namespace of ``backend`` ("cupy" or "numpy")."""
    if backend == "numpy":
        import array_api_compat.numpy as xp

        return xp
    if backend == "cupy":
        try:
            import cupy

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as error:  # ImportError, or CUDARuntimeError without a driver
            raise BackendUnavailable(
                f"CuPy with a CUDA device is not available here ({type(error).__name__}: "
                f"{error}). Install CuPy for your CUDA, or run the same maths on the CPU "
                "with --backend numpy."
            ) from error
        if count < 1:
            raise BackendUnavailable(
                "CuPy found no CUDA device; run on the CPU with --backend numpy."
            )
        import array_api_compat.cupy as xp

        return xp
    raise ValueError(f"backend must be 'cupy' or 'numpy', got {backend!r}")


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy of a CuPy or NumPy array."""
    return x.get() if hasattr(x, "get") else np.asarray(x)


def make_data(config: Config, xp: Any, dtype: Any) -> tuple[Any, Any]:
    """A synthetic classification set whose features are correlated and badly scaled.

    Drawn with NumPy from ``config.seed`` so every backend sees the same data.
    """
    rng = np.random.default_rng(config.seed)
    labels = rng.integers(0, config.n_classes, config.n_samples)
    means = 1.5 * rng.standard_normal((config.n_classes, config.n_features))
    latent = means[labels] + rng.standard_normal((config.n_samples, config.n_features))
    scales = np.geomspace(10.0, 0.1, config.n_features)
    mixing = rng.standard_normal((config.n_features, config.n_features)) * scales
    x = latent @ mixing
    return xp.asarray(x, dtype=dtype), xp.asarray(labels)


def init_params(config: Config, xp: Any, dtype: Any) -> dict[str, Any]:
    rng = np.random.default_rng(config.seed + 1)
    d, c = config.n_features, config.n_classes
    return {
        "w1": xp.asarray(np.eye(d) + 0.1 * rng.standard_normal((d, d)), dtype=dtype),
        "w2": xp.asarray(0.01 * rng.standard_normal((d, c)), dtype=dtype),
        "b2": xp.zeros((c,), dtype=dtype),
    }


def _svdpi_eig(xp: Any):
    # check_finite=False: the finiteness check reads a value on the host (a GPU
    # synchronisation) at every step; the data here is finite by construction.
    return lambda cov: svdpi.eig(cov, check_finite=False, xp=xp)


def forward(
    params: dict[str, Any], x: Any, labels: Any, config: Config, xp: Any, eig: Any = None
) -> tuple[Any, dict[str, Any]]:
    """Mean cross-entropy of the model, and what the backward pass needs.

    ``eig`` maps a batch of covariances to ``(eigenvalues, eigenvectors)``,
    descending; :func:`svdpi.eig` by default (PyTorch autograd passes
    :func:`svdpi.torch.eig` to differentiate the very same code).
    """
    eig = _svdpi_eig(xp) if eig is None else eig
    n, features = x.shape
    groups = config.groups
    d = features // groups
    h = x @ params["w1"]
    # (N, G·d) → (G, d, N): one covariance per group, all groups in one batch.
    hg = xp.permute_dims(xp.reshape(h, (n, groups, d)), (1, 2, 0))
    hc = hg - xp.mean(hg, axis=-1, keepdims=True)
    eye = xp.eye(d, dtype=x.dtype, device=device(x))
    cov = hc @ xp.matrix_transpose(hc) / n + config.eps * eye
    eigenvalues, eigenvectors = eig(cov)
    whitening = svdpi.zca_whitening_matrix(eigenvalues, eigenvectors, xp=xp)
    y = xp.reshape(xp.permute_dims(whitening @ hc, (2, 0, 1)), (n, features))
    logits = y @ params["w2"] + params["b2"]
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    classes = xp.arange(config.n_classes, device=device(x))
    onehot = xp.astype(labels[:, None] == classes[None, :], x.dtype)
    loss = -xp.sum(onehot * log_probs) / n
    cache = {
        "x": x,
        "hc": hc,
        "eigenvalues": eigenvalues,
        "eigenvectors": eigenvectors,
        "whitening": whitening,
        "y": y,
        "log_probs": log_probs,
        "onehot": onehot,
    }
    return loss, cache


def backward(
    params: dict[str, Any], cache: dict[str, Any], config: Config, xp: Any
) -> dict[str, Any]:
    """Gradients of the loss with respect to ``params``, by hand, with svdpi's VJPs."""
    x, hc, whitening, y = cache["x"], cache["hc"], cache["whitening"], cache["y"]
    n, features = x.shape
    groups = config.groups
    d = features // groups
    # Softmax cross-entropy and the linear classifier.
    g_logits = (xp.exp(cache["log_probs"]) - cache["onehot"]) / n
    g_w2 = xp.matrix_transpose(y) @ g_logits
    g_b2 = xp.sum(g_logits, axis=0)
    g_y = g_logits @ xp.matrix_transpose(params["w2"])
    g_yg = xp.permute_dims(xp.reshape(g_y, (n, groups, d)), (1, 2, 0))  # (G, d, N)
    # y_g = W_g hc_g: both factors get a gradient.
    g_whitening = g_yg @ xp.matrix_transpose(hc)
    g_hc = xp.matrix_transpose(whitening) @ g_yg
    # W_g = zca(eig(Σ_g)): svdpi chains the whitening VJP into the SVD-PI eig VJP.
    g_cov = svdpi.zca_whitening_matrix_vjp(
        cache["eigenvalues"],
        cache["eigenvectors"],
        g_whitening,
        method=config.method,
        num_iters=config.num_iters,
        xp=xp,
    )
    # Σ = hc hcᵀ / N + εI: ⟨G, dΣ⟩ = ⟨(G + Gᵀ) hc / N, d hc⟩.
    g_hc = g_hc + (g_cov + xp.matrix_transpose(g_cov)) @ hc / n
    # hc = h − mean(h): centring removes the mean of the gradient too.
    g_hg = g_hc - xp.mean(g_hc, axis=-1, keepdims=True)
    g_h = xp.reshape(xp.permute_dims(g_hg, (2, 0, 1)), (n, features))
    g_w1 = xp.matrix_transpose(x) @ g_h
    return {"w1": g_w1, "w2": g_w2, "b2": g_b2}


def _to_torch(x: Any, torch: Any) -> Any:
    try:  # zero copy: a CUDA tensor for CuPy, a CPU tensor for NumPy
        return torch.from_dlpack(x)
    except Exception:  # e.g. PyTorch built without CUDA receiving a CuPy array
        return torch.from_numpy(to_host(x))


def autograd_gradients(
    params: dict[str, Any], x: Any, labels: Any, config: Config, *, eig: str = "svdpi"
) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and gradients by PyTorch autograd through the same :func:`forward`.

    ``eig="svdpi"`` differentiates ``svdpi.torch.eig`` (the SVD-PI backward);
    ``eig="eigh"`` uses ``torch.linalg.eigh``'s own backward, an independent
    check for ``config.method == "analytic"`` on separated spectra.
    """
    import array_api_compat.torch as xp_torch
    import torch

    import svdpi.torch

    leaves = {k: _to_torch(v, torch).detach().clone().requires_grad_() for k, v in params.items()}
    x_t = _to_torch(x, torch).to(leaves["w1"].device)
    labels_t = _to_torch(labels, torch).to(leaves["w1"].device)
    if eig == "svdpi":

        def eig_fn(cov):
            return svdpi.torch.eig(cov, method=config.method, num_iters=config.num_iters)
    elif eig == "eigh":

        def eig_fn(cov):
            w, v = torch.linalg.eigh(cov)
            return w.flip(-1), v.flip(-1)
    else:
        raise ValueError(f"eig must be 'svdpi' or 'eigh', got {eig!r}")
    loss, _ = forward(leaves, x_t, labels_t, config, xp_torch, eig=eig_fn)
    loss.backward()
    grads = {k: leaf.grad.detach().cpu().numpy() for k, leaf in leaves.items()}
    return float(loss.detach()), grads


def check_gradients(
    params: dict[str, Any], x: Any, labels: Any, config: Config, xp: Any
) -> dict[str, float]:
    """Largest relative difference, per parameter, between the hand-written backward and autograd.

    Both run in float64 on the same data (the arrays are shared with PyTorch
    through DLPack where possible).
    """
    params64 = {k: xp.astype(v, xp.float64) for k, v in params.items()}
    x64 = xp.astype(x, xp.float64)
    _, cache = forward(params64, x64, labels, config, xp)
    manual = backward(params64, cache, config, xp)
    _, expected = autograd_gradients(params64, x64, labels, config)
    errors = {}
    for name, grad in expected.items():
        difference = np.max(np.abs(to_host(manual[name]) - grad))
        errors[name] = float(difference / max(np.max(np.abs(grad)), np.finfo(np.float64).tiny))
    return errors


def train(
    params: dict[str, Any],
    x: Any,
    labels: Any,
    config: Config,
    xp: Any,
    *,
    print_every: int = 25,
    log: Any = print,
) -> list[float]:
    """Plain gradient descent; returns the loss at every step (read on the host when printed)."""
    losses = []
    for step in range(config.steps):
        loss, cache = forward(params, x, labels, config, xp)
        grads = backward(params, cache, config, xp)
        params.update({k: params[k] - config.learning_rate * grads[k] for k in params})
        losses.append(loss)
        if print_every and (step % print_every == 0 or step == config.steps - 1):
            predictions = xp.argmax(cache["log_probs"], axis=1)
            accuracy = float(xp.mean(xp.astype(predictions == labels, xp.float32)))
            log(f"step {step:4d}  loss {float(loss):.4f}  train accuracy {accuracy:.3f}")
    return [float(loss) for loss in losses]


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer ``>= low`` (and ``<= high``), else argparse's error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}; got {text!r}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=("cupy", "numpy"),
        default="cupy",
        help="array library (default: cupy, which needs a CUDA GPU)",
    )
    parser.add_argument("--steps", type=_int_in(1), default=Config.steps)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=Config.seed)
    parser.add_argument(
        "--no-gradient-check",
        action="store_true",
        help="skip the one-off comparison with PyTorch autograd",
    )
    args = parser.parse_args(argv)
    config = Config(steps=args.steps, seed=args.seed)
    try:
        xp = array_namespace_for(args.backend)
    except BackendUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dtype = getattr(xp, args.dtype)
    x, labels = make_data(config, xp, dtype)
    params = init_params(config, xp, dtype)
    print(
        f"backend {args.backend} ({args.dtype}): {config.n_samples} samples, "
        f"{config.n_features} features in {config.groups} groups, {config.n_classes} classes"
    )
    if not args.no_gradient_check:
        try:
            errors = check_gradients(params, x, labels, config, xp)
        except ImportError as error:
            print(f"gradient check skipped: {error}")
        else:
            worst = max(errors.values())
            detail = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
            print(f"hand-written backward vs PyTorch autograd (float64): {detail}")
            if worst > 1e-8:
                print("error: the gradients disagree", file=sys.stderr)
                return 1
    start = time.perf_counter()
    losses = train(params, x, labels, config, xp)
    elapsed = time.perf_counter() - start
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {config.steps} steps ({elapsed:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
