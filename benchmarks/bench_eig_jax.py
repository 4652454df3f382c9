"""jax.grad through svdpi.jax.eig against jax.grad through jnp.linalg.eigh, side by side.

Run: ``python benchmarks/bench_eig_jax.py`` (``--quick`` for a smoke run).
Prints a Markdown table; ``--output FILE`` also writes it to a file.

Both candidates are the same loss, ``<ḡλ, λ> + <ḡV, V>`` over all eigenpairs
(eigh's ascending output re-sorted to svdpi's descending order), its
gradient taken with ``jax.grad`` and the whole function ``jax.jit``-compiled;
each call ends with ``block_until_ready``. Shapes are those of the PyTorch
table in ``bench_eig.py``; float32 (JAX's default) unless ``--dtype float64``.

Robust to load spikes on a shared machine: the candidates are timed in
interleaved rounds (their order alternating from round to round), each
round a batch of calls lasting about ``--min-seconds``; the table gives the
median and the minimum over the rounds, and the ratios of both. A spike
inflates a few rounds of one candidate, which moves neither statistic much.
By default XLA runs on one CPU thread (``--threads all`` to lift that),
as the PyTorch table does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

SHAPES = [(16, 4), (8, 8), (4, 16), (1, 64), (4, 128), (1, 512)]


def _set_threads(threads: str) -> None:
    """Restrict XLA's CPU backend to one thread; only effective before JAX starts."""
    if threads == "1":
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()


def _problem(batch, n, dtype, seed=0):
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n, 2 * n))
    a = x @ np.swapaxes(x, -1, -2) / (2 * n) + 1e-3 * np.eye(n)
    grad_w = rng.standard_normal((batch, n))
    grad_v = rng.standard_normal((batch, n, n))
    return tuple(jnp.asarray(array, dtype=dtype) for array in (a, grad_w, grad_v))


def candidates(a, grad_w, grad_v):
    """``{name: () -> gradient}``: the two jitted gradients of the same loss, ready to time."""
    import jax
    import jax.numpy as jnp

    import svdpi.jax

    def svdpi_loss(m):
        w, v = svdpi.jax.eig(m)
        return jnp.sum(grad_w * w) + jnp.sum(grad_v * v)

    def eigh_loss(m):
        w, v = jnp.linalg.eigh(m)
        # Ascending to descending, so that both losses weight the same eigenpairs.
        return jnp.sum(grad_w * w[..., ::-1]) + jnp.sum(grad_v * v[..., ::-1])

    svdpi_grad = jax.jit(jax.grad(svdpi_loss))
    eigh_grad = jax.jit(jax.grad(eigh_loss))
    return {
        "svdpi": lambda: svdpi_grad(a).block_until_ready(),
        "eigh": lambda: eigh_grad(a).block_until_ready(),
    }


def time_interleaved(functions, *, rounds, min_seconds):
    """``{name: [seconds per call, one per round]}``, rounds interleaved, order alternating."""
    repeats = {}
    for name, fn in functions.items():
        fn()  # compile
        fn()
        start = time.perf_counter()
        fn()
        repeats[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-7)))
    samples = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            fn, count = functions[name], repeats[name]
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def table(shapes, dtype, rounds, min_seconds):
    from _timing import format_time

    rows = [
        "| batch × n | svdpi.jax.eig grad (median) | jnp.linalg.eigh grad (median) | "
        "svdpi / eigh (median) | svdpi / eigh (min) |",
        "|---|---|---|---|---|",
    ]
    for batch, n in shapes:
        samples = time_interleaved(
            candidates(*_problem(batch, n, dtype)), rounds=rounds, min_seconds=min_seconds
        )
        median = {name: statistics.median(values) for name, values in samples.items()}
        least = {name: min(values) for name, values in samples.items()}
        rows.append(
            f"| {batch} × {n} | {format_time(median['svdpi'])} | "
            f"{format_time(median['eigh'])} | {median['svdpi'] / median['eigh']:.2f} | "
            f"{least['svdpi'] / least['eigh']:.2f} |"
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--min-seconds", type=float, default=0.02, help="per timed batch")
    parser.add_argument("--threads", choices=["1", "all"], default="1")
    parser.add_argument("--quick", action="store_true", help="two small shapes, few rounds")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    _set_threads(args.threads)

    import jax
    from _timing import machine_description

    import svdpi

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = getattr(jax.numpy, args.dtype)
    shapes = SHAPES[:2] if args.quick else SHAPES
    rounds = 3 if args.quick else args.rounds
    min_seconds = 0.002 if args.quick else args.min_seconds
    lines = [
        f"Machine: {machine_description()}; jax {jax.__version__} "
        f"({'one XLA thread' if args.threads == '1' else 'all XLA threads'}); "
        f"svdpi {svdpi.__version__}.",
        "",
        f"jax.jit(jax.grad(loss)), CPU, {args.dtype}, method='pi', num_iters = 19, all "
        f"eigenpairs differentiated ({rounds} interleaved rounds):",
        "",
        *table(shapes, dtype, rounds, min_seconds),
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
