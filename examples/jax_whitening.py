"""Train a small classifier with a ZCA-whitening layer in JAX, under ``jit``, with optax.

The model, on a synthetic set whose features are correlated and badly scaled::

    x ─ dense ─▶ h ─ grouped ZCA whitening (svdpi.jax.zca_whitening) ─ scale, shift
      ─ relu ─ dense ─▶ logits ─▶ cross-entropy

The whitening step is a pure function: the training step returns its batch
statistics, and the loop keeps running averages of them (as a BatchNorm
layer keeps ``running_mean`` / ``running_var``), which evaluation applies
with ``svdpi.jax.whiten``. The gradient through the eigendecomposition is
svdpi's (``--method pi`` by default, the power-iteration gradient of Wang et
al., 2019). The whole step (forward, backward, optax update) is one jitted
function; nothing is read on the host inside it.

    python examples/jax_whitening.py                  # 300 steps on the CPU
    python examples/jax_whitening.py --method exact --steps 500
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import svdpi.jax


@dataclass(frozen=True)
class Config:
    n_samples: int = 4096
    n_features: int = 16
    hidden: int = 32
    groups: int = 4
    n_classes: int = 4
    eps: float = 1e-3  # added to each group's covariance, as in the paper's layer
    momentum: float = 0.1  # weight of a batch in the running statistics
    batch_size: int = 256
    learning_rate: float = 3e-3
    steps: int = 300
    seed: int = 0
    method: str = "pi"  # the derivative rule, see svdpi.zca_whitening_matrix_vjp
    num_iters: int = 19
    log_every: int = 50


def make_data(config: Config) -> tuple[Any, Any]:
    """Correlated, badly scaled features of ``n_classes`` Gaussian classes (NumPy, seeded)."""
    rng = np.random.default_rng(config.seed)
    labels = rng.integers(0, config.n_classes, config.n_samples)
    means = 1.5 * rng.standard_normal((config.n_classes, config.n_features))
    latent = means[labels] + rng.standard_normal((config.n_samples, config.n_features))
    scales = np.geomspace(10.0, 0.1, config.n_features)
    mixing = rng.standard_normal((config.n_features, config.n_features)) * scales
    return jnp.asarray(latent @ mixing, dtype=jnp.float32), jnp.asarray(labels)


def init_params(config: Config, key: Any) -> dict[str, Any]:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (config.n_features, config.hidden)) / config.n_features**0.5,
        "b1": jnp.zeros(config.hidden),
        "scale": jnp.ones(config.hidden),
        "shift": jnp.zeros(config.hidden),
        "w2": jax.random.normal(k2, (config.hidden, config.n_classes)) / config.hidden**0.5,
        "b2": jnp.zeros(config.n_classes),
    }


def init_running_stats(config: Config) -> svdpi.jax.WhiteningStats:
    """The statistics of white data: zero mean, identity whitening per group."""
    d = config.hidden // config.groups
    return svdpi.jax.WhiteningStats(
        jnp.zeros(config.hidden), jnp.broadcast_to(jnp.eye(d), (config.groups, d, d))
    )


def apply(params, x, config: Config, running_stats=None):
    """Logits: batch statistics in training (``running_stats=None``), else the given ones."""
    h = x @ params["w1"] + params["b1"]
    if running_stats is None:
        h, stats = svdpi.jax.zca_whitening(
            h,
            num_groups=config.groups,
            eps=config.eps,
            method=config.method,
            num_iters=config.num_iters,
        )
    else:
        h, stats = svdpi.jax.whiten(h, running_stats), running_stats
    h = jax.nn.relu(h * params["scale"] + params["shift"])
    return h @ params["w2"] + params["b2"], stats


def loss_fn(params, x, labels, config: Config):
    logits, stats = apply(params, x, config)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, stats


def make_train_step(config: Config, optimizer):
    @jax.jit
    def train_step(params, opt_state, running_stats, key, x_all, labels_all):
        index = jax.random.choice(key, x_all.shape[0], (config.batch_size,), replace=False)
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, x_all[index], labels_all[index], config
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        running_stats = jax.tree.map(
            lambda old, new: (1 - config.momentum) * old + config.momentum * new,
            running_stats,
            stats,
        )
        return params, opt_state, running_stats, loss

    return train_step


def accuracy(params, x, labels, config: Config, running_stats) -> float:
    logits, _ = apply(params, x, config, running_stats)
    return float(jnp.mean(jnp.argmax(logits, axis=-1) == labels))


def train(config: Config, *, verbose: bool = True) -> dict[str, Any]:
    """Train; return the per-step losses, the final accuracies and the wall time."""
    x, labels = make_data(config)
    split = config.n_samples * 3 // 4
    x_train, y_train, x_test, y_test = x[:split], labels[:split], x[split:], labels[split:]
    key = jax.random.key(config.seed)
    key, init_key = jax.random.split(key)
    params = init_params(config, init_key)
    optimizer = optax.adam(config.learning_rate)
    opt_state = optimizer.init(params)
    running_stats = init_running_stats(config)
    train_step = make_train_step(config, optimizer)
    losses = []
    start = time.perf_counter()
    for step in range(config.steps):
        key, step_key = jax.random.split(key)
        params, opt_state, running_stats, loss = train_step(
            params, opt_state, running_stats, step_key, x_train, y_train
        )
        losses.append(loss)
        if verbose and (step % config.log_every == 0 or step == config.steps - 1):
            print(f"step {step:4d}  loss {float(loss):.4f}")
    losses = [float(value) for value in losses]  # one host read at the end
    seconds = time.perf_counter() - start
    result = {
        "losses": losses,
        "train_accuracy": accuracy(params, x_train, y_train, config, running_stats),
        "test_accuracy": accuracy(params, x_test, y_test, config, running_stats),
        "seconds": seconds,
    }
    if verbose:
        print(
            f"{config.steps} steps in {seconds:.1f} s (compilation included); "
            f"accuracy with running statistics: train {result['train_accuracy']:.3f}, "
            f"test {result['test_accuracy']:.3f}"
        )
    return result


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=_int_in(1), default=Config.steps)
    parser.add_argument(
        "--method", default=Config.method, choices=["pi", "taylor", "analytic", "exact"]
    )
    parser.add_argument("--num-iters", type=_int_in(1), default=Config.num_iters)
    parser.add_argument(
        "--groups",
        type=_int_in(1),
        default=Config.groups,
        help=f"whitening groups; must divide the {Config.hidden} hidden features",
    )
    parser.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=Config.seed)
    args = parser.parse_args(argv)
    if Config.hidden % args.groups:
        parser.error(f"--groups {args.groups} must divide the {Config.hidden} hidden features")
    config = replace(
        Config(),
        steps=args.steps,
        method=args.method,
        num_iters=args.num_iters,
        groups=args.groups,
        seed=args.seed,
    )
    return train(config)


if __name__ == "__main__":
    main()
